"""`study dashboard RUN_DIR`: the W&B workspace that lays out a study's analysis run, built with the
wandb-workspaces library from what the analysis logged (RUN_DIR/analysis/wandb_keys.json).

Saving a workspace needs a key and the network; offline, the workspace's spec (the library's own View model as
JSON) is written to RUN_DIR/analysis/wandb_workspace.json and `study dashboard RUN_DIR --push` saves it later.
"""

from __future__ import annotations

import json
from pathlib import Path

KEYS = "wandb_keys.json"  # written by analysis.wandb_log.log_analysis
SPEC = "wandb_workspace.json"


def logged_keys(run_dir: str | Path) -> dict:
    """What the study's analysis run logged; ValueError naming the command that makes it when absent."""
    path = Path(run_dir) / "analysis" / KEYS
    if not path.is_file():
        raise ValueError(f"{path} not found: run `study analyze {run_dir}` with W&B on (tracking.wandb_mode "
                         "offline or online) first")
    return json.loads(path.read_text())


def build_workspace(run_dir: str | Path, entity: str | None = None):
    """The workspace of one study: findings, the results table, the paper's figures as native charts, the
    sample grids and the training curves, each section naming only keys the study's runs logged."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    keys = logged_keys(run_dir)
    group = keys.get("group") or Path(run_dir).name

    def chart(c: dict):
        # A wandb.plot chart is stored as a table under KEY_table and drawn by its Vega preset.
        return wr.CustomChart(query={"summaryTable": {"tableKey": f"{c['key']}_table"}}, chart_name=c["preset"],
                              chart_fields=c["fields"], chart_strings=c["strings"])

    charts = keys.get("charts", [])
    section = lambda name, panels, is_open=True: ws.Section(name=name, panels=panels, is_open=is_open)  # noqa: E731
    sections = [
        section("Results table", [wr.WeavePanelSummaryTable(table_name=k) for k in keys.get("tables", [])
                                  if k in ("tables/results", "tables/claims", "tables/numbers")]),
        section("Quality vs training compute", [chart(c) for c in charts if "training_compute" in c["key"]]),
        section("Optimal guidance", [chart(c) for c in charts if "_vs_guidance" in c["key"]]),
        section("Quality vs sampling cost", [chart(c) for c in charts if "_vs_sampling_cost" in c["key"]]),
        section("Best size per sampling budget", [chart(c) for c in charts if "best_size" in c["key"]]),
        section("Sample grids", [wr.MediaBrowser(title="grids", media_keys=[k for k in keys.get("images", [])
                                                                           if k.startswith("grids/")])]),
        section("Figures", [wr.MediaBrowser(title="figures", media_keys=[k for k in keys.get("images", [])
                                                                         if k.startswith("figures/")])], False),
        section("Training runs", [wr.LinePlot(title="training loss", x="train_images", y=["loss"]),
                                  wr.LinePlot(title="throughput", x="train_images", y=["images_per_s"])], False),
        section("Every table", [wr.WeavePanelSummaryTable(table_name=k) for k in keys.get("tables", [])], False),
    ]
    return ws.Workspace(entity=entity or "", project=keys["project"], name=f"ldm-scaling: {group}",
                        sections=[s for s in sections if s.panels],
                        # The study's runs: the analysis run and every training run are named after the study.
                        runset_settings=ws.RunsetSettings(query=group))


def write_spec(run_dir: str | Path, entity: str | None = None) -> Path:
    """RUN_DIR/analysis/wandb_workspace.json: the workspace as the library's View model (validated on load)."""
    spec = build_workspace(run_dir, entity)._to_model().model_dump_json(by_alias=True, indent=1)
    out = Path(run_dir) / "analysis" / SPEC
    out.write_text(spec)
    return out


def push(run_dir: str | Path, entity: str | None = None) -> str:
    """Save the workspace to W&B (needs WANDB_API_KEY and the network); its URL."""
    workspace = build_workspace(run_dir, entity)
    workspace.save()
    return workspace.url
