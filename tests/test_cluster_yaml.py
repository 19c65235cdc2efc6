"""cluster.yaml: valid for Ray's autoscaler (checked offline) and true to what the study needs."""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray._private.label_utils import validate_label_key, validate_label_value, validate_node_labels
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"

# vCPUs and GPUs of the instance types the file may use (AWS instance type pages). A node type's
# stated resources must match them; a new instance type needs a row here.
INSTANCE_TYPES = {
    "m7i.2xlarge": (8, 0),
    "m7i.8xlarge": (32, 0),
    "p5.48xlarge": (192, 8),  # 8x H100 80 GB
    "p4d.24xlarge": (96, 8),  # 8x A100 40 GB
    "g6e.2xlarge": (8, 1),  # 1x L40S 48 GB
}
# GB of each GPU of the GPU instance types: what the memory plan must read off the node type's kind resource.
GPU_MEMORY_GB = {"p5.48xlarge": 80, "p4d.24xlarge": 40, "g6e.2xlarge": 48}

# node_config goes to EC2 RunInstances as keyword arguments and Ray's schema leaves it free-form,
# so a misspelt key there would only fail at launch time. The parameter names of RunInstances
# (botocore's ec2 service model, 1.44) plus SubnetIds, which Ray turns into one SubnetId.
RUN_INSTANCES_PARAMETERS = {
    "AdditionalInfo", "BlockDeviceMappings", "CapacityReservationSpecification", "ClientToken",
    "CpuOptions", "CreditSpecification", "DisableApiStop", "DisableApiTermination", "DryRun",
    "EbsOptimized", "ElasticGpuSpecification", "ElasticInferenceAccelerators",
    "EnablePrimaryIpv6", "EnclaveOptions", "HibernationOptions", "IamInstanceProfile", "ImageId",
    "InstanceInitiatedShutdownBehavior", "InstanceMarketOptions", "InstanceType",
    "Ipv6AddressCount", "Ipv6Addresses", "KernelId", "KeyName", "LaunchTemplate",
    "LicenseSpecifications", "MaintenanceOptions", "MaxCount", "MetadataOptions", "MinCount",
    "Monitoring", "NetworkInterfaces", "NetworkPerformanceOptions", "Operator", "Placement",
    "PrivateDnsNameOptions", "PrivateIpAddress", "RamdiskId", "SecondaryInterfaces",
    "SecurityGroupIds", "SecurityGroups", "SubnetId", "TagSpecifications", "UserData",
    "SubnetIds",
}
MARKET_OPTIONS = {"MarketType", "SpotOptions"}
BLOCK_DEVICE_MAPPING = {"DeviceName", "Ebs", "NoDevice", "VirtualName"}
EBS = {
    "AvailabilityZone", "AvailabilityZoneId", "DeleteOnTermination", "EbsCardIndex", "Encrypted",
    "Iops", "KmsKeyId", "OutpostArn", "SnapshotId", "Throughput", "VolumeInitializationRate",
    "VolumeSize", "VolumeType",
}

SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret access key": r"(?i)aws_secret_access_key\s*[=:]\s*[\"']?[^\s\"'$]",
    "W&B API key": r"WANDB_API_KEY\s*[=:]\s*[\"']?[^\s\"'$]",
    "password value": r"(?i)\bpass(?:word|wd)?\s*[=:]\s*[\"']?[^\s\"'$]",
    "SQL password literal": r"(?i)\bPASSWORD\s+'[^'$]",
    "credentials in a URL": r"://[^/\s:@]+:[^/\s@$]+@",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "40-hex token (W&B key)": r"\b[0-9a-f]{40}\b",
}

COMMAND_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands", "initialization_commands")


def _refuse_network(*args, **kwargs):
    raise AssertionError("cluster validation tried to use the network")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(cfg: dict) -> dict:
    """What `ray up` checks before it calls the cloud: defaults merged, then Ray's schema.

    Run with no sockets and no AWS credentials, so validation that needed AWS would fail loudly.
    """
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent")
        mp.setattr(socket, "create_connection", _refuse_network)
        mp.setattr(socket, "getaddrinfo", _refuse_network)
        mp.setattr(socket.socket, "connect", _refuse_network)
        prepared = prepare_config(copy.deepcopy(cfg))
        validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    before = set(sys.modules)
    cfg = ray_validate(raw)
    # The AWS half of `ray up` (IAM, subnets, key pairs, instance types) lives in these modules
    # and needs boto3 and credentials; offline validation must not reach it.
    touched = {m for m in set(sys.modules) - before if m.startswith(("boto", "ray.autoscaler._private.aws"))}
    assert not touched, f"validation imported the AWS provider: {sorted(touched)}"
    return cfg


def node_types(cfg: dict) -> dict:
    return cfg["available_node_types"]


def workers(cfg: dict) -> dict:
    return {k: v for k, v in node_types(cfg).items() if k != cfg["head_node_type"]}


def is_spot(node_type: dict) -> bool:
    return node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"


def unknown_node_config_keys(node_config: dict) -> list[str]:
    """Keys of a node_config that EC2 RunInstances would reject."""
    bad = [k for k in node_config if k not in RUN_INSTANCES_PARAMETERS]
    bad += [f"InstanceMarketOptions.{k}" for k in node_config.get("InstanceMarketOptions", {})
            if k not in MARKET_OPTIONS]
    for mapping in node_config.get("BlockDeviceMappings", []):
        bad += [f"BlockDeviceMappings.{k}" for k in mapping if k not in BLOCK_DEVICE_MAPPING]
        bad += [f"BlockDeviceMappings.Ebs.{k}" for k in mapping.get("Ebs", {}) if k not in EBS]
    return bad


def secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if re.search(pattern, text)]


def commands(cfg: dict, key: str) -> list[str]:
    return cfg.get(key) or []


def test_ray_validates_the_file_offline(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["cache_stopped_nodes"] is False
    assert prepared["provider"]["region"] and prepared["provider"]["availability_zone"]
    assert 0 < prepared["idle_timeout_minutes"] <= 30
    assert prepared["upscaling_speed"] > 0


@pytest.mark.parametrize("misspell", ["top level", "node type", "command list"])
def test_a_misspelt_key_fails_validation(raw, misspell):
    bad = copy.deepcopy(raw)
    if misspell == "top level":
        bad["idle_timeout_minute"] = bad.pop("idle_timeout_minutes")
    elif misspell == "node type":
        gpu = next(iter(workers(bad).values()))
        gpu["min_worker"] = gpu.pop("min_workers")
    else:
        bad["head_setup_command"] = bad.pop("head_setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        ray_validate(bad)


def test_head_takes_no_trials(prepared):
    head = node_types(prepared)[prepared["head_node_type"]]
    # CPU 0 is passed to the head's `ray start`: nothing that asks for a CPU or GPU runs there.
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert INSTANCE_TYPES[head["node_config"]["InstanceType"]][1] == 0, "the head needs no GPU"
    assert head["max_workers"] == 0
    assert not is_spot(head), "a reclaimed head would end the study"


def test_gpu_worker_types(prepared):
    gpu = {k: v for k, v in workers(prepared).items() if v["resources"].get("GPU", 0) > 0}
    spot = [k for k, v in gpu.items() if is_spot(v)]
    on_demand_8 = {v["node_config"]["InstanceType"] for v in gpu.values()
                   if not is_spot(v) and v["resources"]["GPU"] >= 8}
    single = [k for k, v in gpu.items() if v["resources"]["GPU"] == 1 and v["max_workers"] >= 1]
    assert spot, "no spot GPU node type"
    assert {"p5.48xlarge", "p4d.24xlarge"} <= on_demand_8, "on-demand 8xH100 and 8xA100 expected"
    assert single, "no single-GPU node type"
    for name, nt in workers(prepared).items():
        assert 0 <= nt["min_workers"] <= nt["max_workers"] <= prepared["max_workers"], name
        # labels let a study config select a market; they must say the same as the node config.
        assert nt["labels"]["market-type"] == ("spot" if is_spot(nt) else "on-demand"), name


def test_resources_match_instance_types(prepared):
    for name, nt in workers(prepared).items():
        instance = nt["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"{name}: add {instance} to INSTANCE_TYPES"
        cpus, gpus = INSTANCE_TYPES[instance]
        assert nt["resources"].get("CPU") == cpus, name
        assert nt["resources"].get("GPU", 0) == gpus, name


def test_gpu_types_name_their_kind_for_the_memory_plan(prepared):
    # Trials ask for these resources (study.memory.placement); the plan reads each kind's memory from its name.
    from study.memory import cluster_kinds, kind_memory_gb

    for name, nt in workers(prepared).items():
        kinds = [r for r in nt["resources"] if kind_memory_gb(r) is not None]
        gpus = nt["resources"].get("GPU", 0)
        assert len(kinds) == (1 if gpus else 0), name
        if gpus:
            assert nt["resources"][kinds[0]] == gpus, name  # one unit per GPU: one per Train worker
            assert kind_memory_gb(kinds[0]) == GPU_MEMORY_GB[nt["node_config"]["InstanceType"]], name
    assert {k.resource for k in cluster_kinds(path=CLUSTER_YAML)} == {"gpu_a100_40gb", "gpu_l40s_48gb", "gpu_h100_80gb"}


def test_node_configs_use_run_instances_parameters(prepared):
    for name, nt in node_types(prepared).items():
        assert unknown_node_config_keys(nt["node_config"]) == [], name
        assert nt["node_config"]["ImageId"].startswith(("ami-", "resolve:ssm:")), name
    planted = {"InstanceType": "p4d.24xlarge", "InstanceMarketOption": {"MarketType": "spot"},
               "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSise": 9}}]}
    assert unknown_node_config_keys(planted) == ["InstanceMarketOption", "BlockDeviceMappings.Ebs.VolumeSise"]


def test_labels_are_valid_ray_labels(prepared):
    for name, nt in node_types(prepared).items():
        labels = nt.get("labels", {})
        validate_node_labels(labels)
        for key, value in labels.items():
            assert validate_label_key(key) is None, (name, key)
            validate_label_value(value)


def test_setup_installs_the_project(prepared):
    mounts = {remote: (REPO / local).resolve() for remote, local in prepared["file_mounts"].items()}
    assert mounts.get("~/ldm-scaling") == REPO, "the repository must be synced to ~/ldm-scaling"
    common = " ".join(commands(prepared, "worker_setup_commands"))  # common + worker commands
    assert re.search(r"pip install .*-e ~/ldm-scaling", common)
    # the Ray on the cluster must be the Ray that `ray up` and `ray job submit` run here
    pinned = re.search(r"ray\[default\]==([\w.]+)", common)
    assert pinned and pinned.group(1) == ray.__version__, "pin the cluster's Ray to the local one"
    assert "ray start --head" in " ".join(commands(prepared, "head_start_ray_commands"))
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(commands(prepared, "worker_start_ray_commands"))
    assert "0.0.0.0" not in " ".join(commands(prepared, "head_start_ray_commands")), "dashboard stays local"


def test_efs_is_named_in_one_place(raw, prepared):
    efs = r"fs-[\w-]+\.efs\.[a-z0-9-]+\.amazonaws\.com"
    assert sum(len(re.findall(efs, c)) for key in COMMAND_LISTS for c in commands(raw, key)) == 1
    for key in ("head_setup_commands", "worker_setup_commands"):  # the mount reaches every node
        mounts = [c for c in commands(prepared, key) if re.search(efs, c)]
        assert len(mounts) == 1 and "/mnt/shared" in mounts[0], key


def test_optuna_database_on_the_head(prepared):
    head = " ".join(commands(prepared, "head_setup_commands"))
    assert "install -y -q postgresql" in head
    assert "listen_addresses = 'localhost,$HEAD_IP'" in head
    assert "scram-sha-256" in head and not re.search(r"\btrust\b", head)
    assert "ray-head" in " ".join(commands(prepared, "worker_setup_commands"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_commands_parse_as_bash(prepared):
    for key in COMMAND_LISTS:
        for cmd in commands(prepared, key):
            done = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert done.returncode == 0, f"{key}: {cmd}\n{done.stderr}"


def test_no_literal_secrets():
    assert secrets_in(CLUSTER_YAML.read_text()) == []


@pytest.mark.parametrize("planted", [
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "export WANDB_API_KEY=abc123",
    "password: hunter2",
    "ALTER ROLE optuna PASSWORD 'hunter2'",
    "postgresql://optuna:hunter2@ray-head/optuna",
    "-----BEGIN RSA PRIVATE KEY-----",
    "0123456789abcdef0123456789abcdef01234567",
])
def test_the_secret_scan_catches_planted_secrets(planted):
    assert secrets_in(CLUSTER_YAML.read_text() + "\n# " + planted + "\n")


def _ingress_cidrs(perms) -> list[str]:
    return [r.get("CidrIp") or r.get("CidrIpv6") for p in perms or [] for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])]


def test_no_port_is_open_to_the_world(raw, prepared):
    # Ray's AWS provider creates a security group for every node type without SecurityGroupIds and always
    # adds SSH from 0.0.0.0/0 to it (its own default rule, whatever provider.security_group adds), so every
    # node type must name the user's group; that group's rules are created as docs/cluster.md shows.
    aws_config = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
    assert '"CidrIp": "0.0.0.0/0"' in aws_config.read_text(), "Ray's default changed: revisit this test"
    for name, nt in node_types(prepared).items():
        sgs = nt["node_config"].get("SecurityGroupIds")
        assert sgs and all(re.fullmatch(r"sg-[\w-]+", g) for g in sgs), f"{name}: no SecurityGroupIds"
    groups = {tuple(nt["node_config"]["SecurityGroupIds"]) for nt in node_types(raw).values()}
    assert len(groups) == 1, "one security group for the whole cluster (nodes reach each other through it)"
    extra = raw["provider"].get("security_group", {}).get("IpPermissions", [])
    assert not [c for c in _ingress_cidrs(extra) if c in ("0.0.0.0/0", "::/0")]
    assert not re.search(r"0\.0\.0\.0/0|::/0", CLUSTER_YAML.read_text().split("available_node_types:")[1])
    # the dashboard and Ray's ports stay on the nodes: reached through `ray dashboard` (an SSH tunnel)
    starts = " ".join(commands(prepared, "head_start_ray_commands"))
    assert "--dashboard-host" not in starts and "--include-dashboard" not in starts


def test_docs_open_ssh_to_a_chosen_range_and_nfs_to_the_cluster_only():
    docs = (REPO / "docs" / "cluster.md").read_text()
    rules = re.findall(r"authorize-security-group-ingress[^\n]*", docs)
    assert rules and not [r for r in rules if "0.0.0.0/0" in r or "::/0" in r]
    assert any("--port 22" in r and "--cidr" in r for r in rules), "SSH from the user's range"
    assert any("--port 2049" in r and "--source-group" in r for r in rules), "EFS from the cluster's group only"
