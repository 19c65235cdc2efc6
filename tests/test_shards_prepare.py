"""`study prepare` on streamed data: the three readers, bad samples, s3://, the Ray Data pipeline,
resume after a kill, workers-independent bytes, and shards written on two Ray nodes."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from study.config import load_config
from study.shards.format import ShardIndex, shard_paths
from study.shards.readers import list_sources, read_source


def _png(seed: int, size=(12, 10)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(root, n_tars=3, per_tar=7, bad=None):
    """img2dataset-style shards 00000.tar.. with KEY.jpg/.png, KEY.txt, KEY.json; `bad` names keys to spoil."""
    root.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    for t in range(n_tars):
        with tarfile.open(root / f"{t:05d}.tar", "w") as tar:
            for i in range(per_tar):
                key = f"{t:05d}{i:04d}"
                img = b"not an image" if key in bad and bad[key] == "image" else _png(t * 100 + i)
                _add(tar, f"{key}.png", img)
                if bad.get(key) != "nocaption":
                    cap = b"\xff\xfe bad" if bad.get(key) == "utf8" else f"a photo {t} {i} caf\u00e9".encode()
                    _add(tar, f"{key}.txt", cap)
                _add(tar, f"{key}.json", json.dumps({"key": key, "label": i % 2}).encode())
    return root


def _cfg(root, *extra):
    return load_config("tiny", ["data.name=webdataset", f"data.root={root}", "data.resolution=8",
                                "data.eval_fraction=0.25", "data.shard_size=4", "data.prepare_chunk=5",
                                "eval.feature_extractor=inception", f"eval.inception_path={root}",
                                "eval.num_samples=3", *extra])


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False)  # 2 actors + reads
    yield
    ray.shutdown()


def _run(cfg, folder):
    from study.shards.pipeline import prepare_shards

    uncond = np.zeros((1, cfg.text_encoder.max_length, 384), np.float16)
    return prepare_shards(cfg, folder, folder.parent / "autoencoder", uncond, channels=3, progress=False)


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith("done.json")}


# ---- readers ----------------------------------------------------------------------------------------

def test_webdataset_reader_groups_members_and_flags_bad_samples(tmp_path):
    root = write_wds(tmp_path / "wds", n_tars=1, per_tar=4,
                     bad={"000000001": "image", "000000002": "nocaption", "000000003": "utf8"})
    (src,) = list_sources("webdataset", str(root))
    recs = list(read_source(src))
    assert [r.key for r in recs] == ["000000000", "000000001", "000000002", "000000003"]
    assert recs[0].problem is None and recs[0].caption == "a photo 0 0 café" and recs[0].label == 0
    assert recs[2].problem == "missing caption" and recs[3].problem == "caption is not UTF-8"
    assert recs[1].problem is None  # undecodable bytes are caught at decode time


def test_parquet_and_imagefolder_readers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [_png(0), _png(1), None], "caption": ["a", None, "c"], "id": ["x", "y", "z"]}),
                   tmp_path / "part-0.parquet", row_group_size=2)
    (src,) = list_sources("parquet", str(tmp_path))
    recs = list(read_source(src, image_column="image", caption_column="caption", key_column="id"))
    assert [(r.key, r.problem) for r in recs] == [("x", None), ("y", "missing caption"), ("z", "missing image")]
    with pytest.raises(ValueError, match="data.image_column"):
        list(read_source(src, image_column="jpg", caption_column="caption"))

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png(2))
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "an a"}\n{"file_name": "b.png", "text": "b"}\n')
    (src,) = list_sources("imagefolder", str(folder))
    recs = list(read_source(src))
    assert recs[0].caption == "an a" and recs[0].image == _png(2) and recs[1].problem == "image file not found"


def test_missing_path_fails_before_any_work(tmp_path):
    from study.shards.pipeline import prepare_shards

    cfg = _cfg(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        prepare_shards(cfg, tmp_path / "out" / "shards", tmp_path, None, 3, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.stop()


def test_s3_read_through_the_same_code(tmp_path, s3_server):
    import boto3

    root = write_wds(tmp_path / "wds", n_tars=2, per_tar=3)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="data")
    for p in sorted(root.iterdir()):
        s3.upload_file(str(p), "data", f"laion/{p.name}")
    remote = list_sources("webdataset", "s3://data/laion")
    local = list_sources("webdataset", str(root))
    assert [s.id for s in remote] == [s.id for s in local] == ["00000.tar", "00001.tar"]
    assert remote[0].path == "s3://data/laion/00000.tar"
    assert [(r.key, r.caption, r.image) for r in read_source(remote[1])] == \
        [(r.key, r.caption, r.image) for r in read_source(local[1])]
    with pytest.raises(ValueError, match="does not exist"):
        list_sources("webdataset", "s3://data/elsewhere")


# ---- the pipeline -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run(tmp_path_factory, local_ray):
    """One uninterrupted prepare of three tars (21 samples), shards of 4: the reference bytes."""
    tmp = tmp_path_factory.mktemp("full")
    root = write_wds(tmp / "wds")
    report = _run(_cfg(root), tmp / "a" / "shards")
    return root, tmp / "a" / "shards", report


def test_prepare_writes_each_source_into_its_own_shards_in_arrival_order(tmp_path, full_run, monkeypatch):
    from study.shards.format import split_of

    root, folder, report = full_run
    idx = ShardIndex.load(folder, verify_hashes=True)
    assert report["good"] == 21 and report["bad"] == 0 and idx.n("train") + idx.n("heldout") == 21
    keys = {s: [m["key"] for sh in idx.shards(s) for m in idx.meta(sh["name"])] for s in ("train", "heldout")}
    for s, ks in keys.items():
        # the order the tars were read in (no global sort), each split a hash of the key
        assert ks == sorted(ks) and all(split_of(k, 0.25, 0) == s for k in ks) and len(ks) > 0
        for sh in idx.shards(s):  # a shard holds one tar's samples; only a tar's last shard may be short
            tars = {m["key"][:5] for m in idx.meta(sh["name"])}
            assert tars == {f"{sh['source']:05d}"} and sh["name"].startswith(f"{s}-{sh['source']:06d}-")
        for a, b in zip(idx.shards(s), idx.shards(s)[1:]):
            assert a["n"] == 4 or a["source"] != b["source"]
    assert idx.latent_shape == (3, 8, 8) and idx.context_shape == (16, 384)
    first = idx.shards("train")[0]["name"]
    assert idx.latents(first).dtype == np.float16 and np.abs(np.asarray(idx.latents(first))).max() <= 1.0
    assert idx.images(idx.shards("heldout")[0]["name"]).dtype == np.uint8 and idx.images(first) is None
    assert (folder / "floor_images.npy").exists() and not (folder.parent / "parts").exists()
    assert not [p for p in folder.parent.rglob("*") if p.name.startswith(".")]  # no temp files left
    # Two encoder actors and one writer: the same bytes.
    import ray.data

    budgets, real_iter = [], ray.data.Dataset.iter_rows
    monkeypatch.setattr(ray.data.Dataset, "iter_rows", lambda self, *a, **k: budgets.append(
        self.context.execution_options.resource_limits.object_store_memory) or real_iter(self, *a, **k))
    _run(_cfg(root, "data.prepare_actors=2", "data.prepare_writers=1"), tmp_path / "b" / "shards")
    assert _bytes(folder) == _bytes(tmp_path / "b" / "shards")
    # Reading may run ahead of encoding by data.prepare_readahead (8) chunks per encoder actor, no more:
    # 8 x 2 actors x 5 samples x 3 x 8 x 8 bytes.
    assert budgets == [8 * 2 * 5 * 3 * 8 * 8]


def test_token_id_captions_go_through_the_pipeline_beside_the_same_latents(tmp_path, full_run):
    """data.captions = tokens (paper.yaml's): the encoder actors tokenize, the shards keep int32 ids and no hidden
    states, and the latents are the same bytes in the same shards as the states run's."""
    from study.text import load_text_encoder

    root, folder, _ = full_run
    cfg = _cfg(root, "data.captions=tokens")
    _run(cfg, tmp_path / "t" / "shards")
    s, t = ShardIndex.load(folder), ShardIndex.load(tmp_path / "t" / "shards", verify_hashes=True)
    assert (s.captions, t.captions) == ("states", "tokens") and t.context_shape == s.context_shape == (16, 384)
    for split in ("train", "heldout"):
        same = lambda ix: [(r["name"], r["sha256"]) for r in ix.shards(split)]  # noqa: E731
        assert same(t) == same(s)
    name = t.shards("train")[0]["name"]
    ids = np.asarray(t.context(name))
    assert ids.dtype == np.int32 and ids.shape == (t.shards("train")[0]["n"], 16)
    assert not t.paths(name)["context"].exists() and not s.paths(name)["tokens"].exists()
    states = load_text_encoder(cfg.text_encoder).encode_ids(ids).numpy()
    np.testing.assert_allclose(states, np.asarray(s.context(name), np.float32), atol=2e-3)


def test_killed_prepare_redoes_only_unfinished_sources(tmp_path, full_run, monkeypatch):
    from study.shards.pipeline import FAIL_AFTER_ENV

    root, full, _ = full_run
    cfg = _cfg(root, "data.prepare_writers=1")
    folder = tmp_path / "killed" / "shards"
    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="test hook"):
        _run(cfg, folder)
    assert not (folder / "index.json").exists()
    done = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.latents.npy")}
    assert len({name.split("-")[1] for name in done}) == 2  # two tars in shards
    monkeypatch.delenv(FAIL_AFTER_ENV)
    _run(cfg, folder)
    assert {p: (folder / p).stat().st_mtime_ns for p in done} == done  # finished sources were not rewritten
    assert _bytes(folder) == _bytes(full)


def test_bad_samples_are_skipped_and_listed(tmp_path, local_ray):
    bad = {"000010003": "image", "000010004": "nocaption", "000000002": "utf8"}
    root = write_wds(tmp_path / "wds", n_tars=2, per_tar=10, bad=bad)
    with tarfile.open(root / "00002.tar", "w"):
        pass  # an empty shard
    report = _run(_cfg(root, "data.max_bad_fraction=0.2"), tmp_path / "p" / "shards")
    assert report["good"] == 17 and report["bad"] == 4
    assert {b["key"]: b["problem"] for b in report["bad_samples"]} == {
        "000010003": "undecodable image (UnidentifiedImageError)", "000010004": "missing caption",
        "000000002": "caption is not UTF-8", "00002.tar": "empty shard"}
    assert json.loads((tmp_path / "p" / "prepare_report.json").read_text())["bad"] == 4
    idx = ShardIndex.load(tmp_path / "p" / "shards")
    assert idx.raw["bad_samples"] == 4 and idx.n("train") + idx.n("heldout") == 17
    # Above the allowed fraction: one clear line, no index.
    with pytest.raises(ValueError, match=r"4 of 21 samples .* data.max_bad_fraction=0.1"):
        _run(_cfg(root, "data.max_bad_fraction=0.1"), tmp_path / "q" / "shards")
    assert not (tmp_path / "q" / "shards" / "index.json").exists()


@pytest.mark.parametrize("embedded", [["data.name=digits", "dreambooth.data=digits"],
                                      ["data.name=photos", "data.photo_patches=100"]], ids=["digits", "photos"])
def test_embedded_sets_go_through_the_same_shards(tmp_path, embedded):
    from study.datasets import load_splits
    from study.prepare import _write_embedded, prepared_paths

    cfg = load_config("tiny", [f"cache_dir={tmp_path}", "data.shard_size=500", *embedded])
    prep = prepared_paths(cfg)
    prep.dir.mkdir(parents=True)
    _write_embedded(cfg, prep, progress=False)
    idx = ShardIndex.load(prep.shards_dir, verify_hashes=True)
    train, held = load_splits(cfg.data)
    assert idx.n("train") == len(train) and idx.n("heldout") == len(held)
    full, rest = divmod(len(train), 500)
    assert [s["n"] for s in idx.shards("train")] == [500] * full + ([rest] if rest else [])
    lat = np.concatenate([idx.latents(s["name"]) for s in idx.shards("train")])
    # Native order, the identity latent space: bit for bit the in-memory arrays of before.
    assert np.array_equal(lat, (train.images.astype(np.float32) / 127.5 - 1).astype(np.float16))
    meta = [m for s in idx.shards("heldout") for m in idx.meta(s["name"])]
    assert [m["caption"] for m in meta] == held.captions and [m["label"] for m in meta] == held.labels.tolist()
    assert np.array_equal(np.concatenate([idx.images(s["name"]) for s in idx.shards("heldout")]), held.images)


@pytest.mark.slow
def test_shards_are_written_on_two_ray_nodes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        # Two CPUs a node: an encoder actor of stage 1 may still hold one while the writers start, and the
        # writers (SPREAD) must still find a free CPU on both nodes.
        nodes = [c.add_node(num_cpus=2) for _ in range(2)]
        ray.init(address=c.address, log_to_driver=False)
        root = write_wds(tmp_path / "wds", n_tars=4, per_tar=8)
        folder = tmp_path / "p" / "shards"
        _run(_cfg(root, "data.prepare_writers=2", "data.shard_size=2"), folder)
        idx = ShardIndex.load(folder)
        written_on = {json.loads(shard_paths(folder, s["name"])["done"].read_text())["node"]
                      for split in ("train", "heldout") for s in idx.shards(split)}
        assert written_on == {n.node_id for n in nodes}  # both worker nodes wrote shards, the head none
    finally:
        ray.shutdown()
        c.shutdown()


def _cut(tar_path, member: str) -> None:
    """Cut a tar in the middle of one member's data, as an interrupted upload leaves it."""
    with tarfile.open(tar_path) as tar:
        info = tar.getmember(member)
    with open(tar_path, "r+b") as f:
        f.truncate(info.offset_data + info.size // 2)


def test_a_truncated_tar_keeps_its_readable_samples_and_counts_the_rest_as_bad(tmp_path, local_ray):
    root = write_wds(tmp_path / "wds", n_tars=2, per_tar=10)
    _cut(root / "00001.tar", "000010004.png")  # samples 0-3 of the second tar are whole, the rest is gone
    recs = list(read_source(list_sources("webdataset", str(root))[1]))
    assert [r.key for r in recs if r.problem is None] == [f"00001{i:04d}" for i in range(4)]
    assert [(r.key, r.problem.split(" (")[0]) for r in recs if r.problem] == [("00001.tar", "tar cut short")]
    report = _run(_cfg(root, "data.max_bad_fraction=0.1"), tmp_path / "p" / "shards")
    assert report["good"] == 14 and report["bad"] == 1
    assert [b["key"] for b in report["bad_samples"]] == ["00001.tar"]
    assert "tar cut short" in report["bad_samples"][0]["problem"]
    assert ShardIndex.load(tmp_path / "p" / "shards").raw["bad_samples"] == 1
    # The small VAE's training images stream through the same reader (study.prepare._sample_images).
    from study.prepare import _sample_images
    from study.shards.format import split_of

    cfg = _cfg(root)
    readable = [f"{t:05d}{i:04d}" for t, n in ((0, 10), (1, 4)) for i in range(n)]
    train = [k for k in readable if split_of(k, cfg.data.eval_fraction, cfg.data.split_seed) == "train"]
    assert len(_sample_images(cfg, 100)) == len(train)


_KILLED_PREPARE = """
import sys
import ray
sys.path.insert(0, sys.argv[3])
from test_shards_prepare import _cfg, _run
from pathlib import Path
ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
_run(_cfg(sys.argv[1], "data.prepare_writers=1"), Path(sys.argv[2]))
"""


def test_sigkill_at_every_stage_reruns_to_the_same_bytes_and_leaves_nothing(tmp_path, full_run):
    """A prepare SIGKILLed after a source is encoded, after one is in shards, and after index.json (before
    the clean-up), one after the other on one folder: the rerun gives the uninterrupted run's bytes, and
    neither the staging folder nor an interrupted write's temp file outlives it."""
    import signal
    import subprocess
    import sys

    from study.shards.pipeline import KILL_AT_ENV, PARTS

    root, full, _ = full_run
    folder = tmp_path / "k" / "shards"
    for stage in ("encoded", "sharded", "indexed"):
        if folder.exists():  # a write cut short by a kill leaves its temp file (study.atomic): as one would
            (folder / ".train-000000-00000.latents.npy.x1.tmp").write_bytes(b"half a file")
        proc = subprocess.run([sys.executable, "-c", _KILLED_PREPARE, str(root), str(folder),
                               os.path.dirname(__file__)], env={**os.environ, KILL_AT_ENV: stage},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert (folder / "index.json").exists() == (stage == "indexed")
    assert (folder.parent / PARTS).exists()  # killed before the clean-up
    (folder / ".uncond.npy.x2.tmp").write_bytes(b"half a file")
    _run(_cfg(root, "data.prepare_writers=1"), folder)
    assert _bytes(folder) == _bytes(full)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["prepare_report.json", "shards"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def flaky_http(tmp_path):
    """A loopback HTTP server of a folder whose GETs of .tar files fail (503) while `fail[name]` > 0, or always
    when it is -1; listings (the source list) are served."""
    import functools
    import http.server
    import threading

    folder, fail, served = tmp_path / "www", {}, []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            name = self.path.rsplit("/", 1)[-1]
            if name.endswith(".tar") and fail.get(name, 0) != 0:
                fail[name] -= fail[name] > 0
                self.send_error(503, "unavailable")
                return
            served.append(name)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/", fail, served
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_reads_are_retried_and_a_source_that_keeps_failing_is_a_bad_source(tmp_path, full_run, flaky_http):
    import shutil

    root, full, _ = full_run
    www, url, fail, served = flaky_http
    shutil.copytree(root, www)
    assert [s.id for s in list_sources("webdataset", url)] == ["00000.tar", "00001.tar", "00002.tar"]
    fail.update({"00000.tar": 2, "00002.tar": 1})  # within data.read_retries=2: the bytes of a clean read
    _run(_cfg(url, "data.read_retries=2", "data.read_retry_backoff_s=0.01"), tmp_path / "a" / "shards")
    assert fail == {"00000.tar": 0, "00002.tar": 0} and _bytes(tmp_path / "a" / "shards") == _bytes(full)
    fail["00001.tar"] = -1  # never readable: after its retries, a bad source, and one line
    with pytest.raises(ValueError, match=r"^1 of 3 sources of http.* could not be read after 2 retries .*"
                                         r"first 00001.tar: read failed after 3 tries \(ClientResponseError"):
        _run(_cfg(url, "data.read_retries=2", "data.read_retry_backoff_s=0.01"), tmp_path / "b" / "shards")
    report = json.loads((tmp_path / "b" / "prepare_report.json").read_text())
    assert [s["source"] for s in report["bad_sources"]] == ["00001.tar"]
    assert not (tmp_path / "b" / "shards" / "index.json").exists()
    fail["00001.tar"] = 0  # the storage is back: the rerun reads only that source again
    served.clear()
    _run(_cfg(url, "data.read_retries=2", "data.read_retry_backoff_s=0.01"), tmp_path / "b" / "shards")
    assert {n for n in served if n.endswith(".tar")} == {"00001.tar"} and _bytes(tmp_path / "b" / "shards") == _bytes(full)
    with pytest.raises(ValueError, match="data.read_retries"):
        _cfg(url, "data.read_retries=-1")
