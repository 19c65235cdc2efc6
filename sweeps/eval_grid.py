"""The evaluation grid: every cell (checkpoint, sampler, steps) of an experiment searched for its best
guidance (or evaluated once, for tasks without guidance), as Ray tasks with their own resources, so a
cluster evaluates many cells at once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from study import __version__
from study.config import ConfigError, StudyConfig, from_dict, to_dict
from study import identity
from study.raycluster import ensure_ray, hush_unread_failures
from study.errors import is_disk_full
from sweeps.guidance import (Cell, StorageVanished, StorageWatch, best_guidance, checkpoint_fingerprint,
                             completed_results, open_storage, search_cell, study_namespace)
from study.results import ResultRow, row_dict, sampling_cost
from sweeps.results import upsert_results


@dataclass(frozen=True)
class Chain:
    """The cells of one checkpoint and sampler, searched in order of steps so each is seeded by its
    neighbour's optimum (the optimal guidance moves smoothly with the step count)."""

    width: int
    seed: int
    train_images: int
    checkpoint: str  # path of the milestone checkpoint
    sampler: str
    steps: tuple[int, ...]
    spacing: str
    milestone: dict = field(default_factory=dict, compare=False, hash=False)
    experiment: str = "base"
    task: str = "text2image"
    objective: str = "fid"  # the evaluator's key the search minimises
    fixed_guidance: tuple[float, ...] | None = None  # evaluate exactly these, no search (e.g. (1.0,))
    variant: str = ""  # the checkpoint's weights in another form (e.g. a post-hoc EMA length)
    namespace: str = ""  # its study names' prefix in a shared Optuna storage (sweeps.guidance.study_namespace)
    # A budget of train.loss_milestones: its held-out loss alone (one row, no FID, no sampler), kept beside the
    # checkpoint (heldout_path) rather than in an Optuna study.
    loss_only: bool = False

    def __post_init__(self):  # a config's Spacing choice travels (and is recorded) as its plain string
        object.__setattr__(self, "spacing", str(self.spacing))

    def cells(self) -> list[Cell]:
        return [Cell(self.width, self.seed, self.train_images, self.sampler, s, self.spacing, self.experiment,
                     self.variant, self.namespace) for s in self.steps]


def _checkpoint_fields(cfg: StudyConfig, chain: Chain, rung: dict, training_hash: str) -> dict:
    """The ResultRow fields every row of a chain's checkpoint shares: what was trained, how far, and its identity."""
    m = chain.milestone
    return dict(run_id=cfg.name, trial_id=f"w{chain.width}-s{chain.seed}", experiment=chain.experiment,
                task=chain.task, width=chain.width, params=int(rung["params"]), gflops=float(rung["gflops"]),
                normalized_cost=float(rung["normalized_cost"]), train_images=chain.train_images,
                train_flops=float(m["train_flops"]), train_flops_paper=float(m["train_flops_paper"]),
                seed=chain.seed, checkpoint=chain.checkpoint, config_hash=training_hash, version=__version__,
                partial=bool(m.get("partial", False)), variant=chain.variant)


def _row(cfg: StudyConfig, chain: Chain, rung: dict, cell: Cell, number: int, g: float, res: dict,
         training_hash: str) -> dict:
    row = ResultRow(
        **_checkpoint_fields(cfg, chain, rung, training_hash),
        sampler=chain.sampler, steps=cell.steps, timestep_spacing=chain.spacing, guidance=g,
        sampling_cost=sampling_cost(rung["normalized_cost"], cell.steps), unet_calls=int(res.get("unet_calls", 0)),
        fid=res["fid"], kid=res.get("kid"), alignment=res.get("alignment"), num_samples=int(res["num_samples"]),
        fid_std=res.get("fid_std"), kid_std=res.get("kid_std"),
        fid_floor=res.get("fid_floor"), alignment_metric=res.get("alignment_metric"),
        search="none" if chain.fixed_guidance is not None else cfg.eval.search, optuna_study=cell.study_name,
        optuna_trial=number, sampler_settings=res.get("sampler_settings"), eval_seconds=res.get("eval_seconds"),
        objective=res.get(chain.objective))
    return row_dict(row, res)


def _loss_row(cfg: StudyConfig, chain: Chain, rung: dict, res: dict, training_hash: str) -> dict:
    """The one row of a loss-only budget: its held-out loss, no sampler, steps, guidance or FID."""
    row = ResultRow(
        **_checkpoint_fields(cfg, chain, rung, training_hash),
        sampler="", steps=0, timestep_spacing="", guidance=float("nan"), sampling_cost=0.0, unet_calls=0,
        fid=float("nan"), kid=None, alignment=None, num_samples=0, search="none",
        optuna_study=f"{chain.namespace}loss-w{chain.width}-s{chain.seed}-i{chain.train_images}", optuna_trial=0)
    return row_dict(row, res)


def heldout_path(cfg: StudyConfig, checkpoint: str) -> Path:
    """Where a checkpoint's held-out loss is kept, beside its run's checkpoints and keyed by the settings that decide
    it: computed once for all its chains (samplers) and reruns, and the record of a loss-only budget."""
    from study.identity import stable_hash

    e = cfg.eval
    key = stable_hash({"n": e.heldout_samples, "buckets": e.heldout_buckets, "seed": e.seed,
                       "weights": e.checkpoint, "prediction": cfg.model.prediction_type})
    ckpt = Path(checkpoint)
    # A checkpoint as trained (RUN/train/wW-sS/checkpoints/milestone-N) or in another form of the same milestone
    # (.../phema/sigma-S/milestone-N, one folder per EMA length): the form's folder is part of the name, or
    # every EMA length would read the first one's loss.
    form = "" if ckpt.parent.name == "checkpoints" else f"{ckpt.parent.name}-"
    return ckpt.parent.parent / "heldout" / f"{form}{ckpt.name}-{key}.json"


def cached_heldout(cfg: StudyConfig, checkpoint: str) -> dict | None:
    """A checkpoint's kept held-out loss, None when not computed yet (or its file is unreadable: computed again)."""
    import json

    try:
        return json.loads(heldout_path(cfg, checkpoint).read_text())
    except (OSError, ValueError):
        return None


def score_loss(cfg_dict: dict, prepared_dir: str, checkpoint: str) -> dict:
    """The held-out loss of a checkpoint, computed (and kept) unless already kept: the work of a loss-only chain."""
    import torch

    from study.atomic import write_json
    from study.heldout import HeldoutScorer
    from study.runtime import device
    from study.weights import load_unet

    cfg = from_dict(cfg_dict)
    if (res := cached_heldout(cfg, checkpoint)) is not None:
        return res
    torch.set_num_threads(max(1, int(cfg.eval.cpus_per_eval)))
    res = HeldoutScorer(cfg, Path(prepared_dir) / "shards", device(cfg.eval.gpus_per_eval))(
        load_unet(checkpoint, weights=cfg.eval.checkpoint))
    if not res:
        raise ConfigError(f"train.loss_milestones needs the held-out loss, which is off or has no held-out data: "
                          f"set eval.heldout_samples >= 2 (now {cfg.eval.heldout_samples}), or empty "
                          f"train.loss_milestones")
    write_json(heldout_path(cfg, checkpoint), res)
    return res


def chain_rows(cfg: StudyConfig, chain: Chain, rung: dict, storage, training_hash: str | None = None) -> list[dict]:
    """The results rows of a chain, rebuilt from its Optuna studies (so a resume never duplicates); a loss-only
    chain's from its kept loss.

    training_hash: identity.training_hash(to_dict(cfg)), when the caller has it (it costs ~0.2 CPU-s)."""
    training_hash = training_hash or identity.training_hash(to_dict(cfg))
    if chain.loss_only:
        res = cached_heldout(cfg, chain.checkpoint)
        return [] if res is None else [_loss_row(cfg, chain, rung, res, training_hash)]
    fingerprint = checkpoint_fingerprint(chain.checkpoint)
    return [_row(cfg, chain, rung, cell, n, g, res, training_hash) for cell in chain.cells()
            for n, g, res in completed_results(cell, storage, fingerprint)]


def slice_room(cfg: StudyConfig, have: dict) -> int:
    """How many FID slices the cluster runs at once: the scarcest resource a slice asks for decides (the
    GPUs on a GPU cluster, where counting CPUs alone let coordinators of chains that must wait pile up)."""
    per = [(kind, n) for kind, n in (("CPU", cfg.eval.cpus_per_eval), ("GPU", cfg.eval.gpus_per_eval)) if n > 0]
    return max(1, min((int(have.get(kind, 0) // n) for kind, n in per), default=int(have.get("CPU", 1))))


def fid_slices(cfg: StudyConfig, chain: Chain) -> int:
    """Tasks one evaluation of the chain is split over: eval.fid_slices for text-to-image FID, else 1."""
    return cfg.eval.fid_slices if chain.task == "text2image" and not chain.loss_only else 1


class _Loaded:
    """A chain's evaluator and model in one process: evaluate(sampler, steps, g) -> result dict."""

    def __init__(self, cfg_dict: dict, prepared_dir: str, task: str, checkpoint: str):
        import torch

        from study.tasks import make_evaluator
        from study.weights import load_unet

        cfg = from_dict(cfg_dict)
        torch.set_num_threads(max(1, int(cfg.eval.cpus_per_eval)))
        self.cfg, self.checkpoint = cfg, checkpoint
        self.evaluator = make_evaluator(task, cfg, prepared_dir)
        self.unet = load_unet(checkpoint, weights=cfg.eval.checkpoint)
        self.heldout = None  # the checkpoint's held-out loss, computed with its first evaluation

    def _calls(self, res: dict, steps: int, g: float) -> dict:
        from study.sampling import guidance_embedded, unet_calls

        res.setdefault("unet_calls", unet_calls(self.unet, steps, g))
        # The checkpoint's held-out denoising loss, once per chain, on every row of it: the cheap signal beside
        # FID. A text-to-image base UNet only (a distilled student does not minimise that loss).
        if self.heldout is None:
            scorer = getattr(self.evaluator, "heldout_loss", None)
            self.heldout = self._cached(scorer) if scorer and not guidance_embedded(self.unet) else {}
        return {**self.heldout, **res}

    def _cached(self, scorer) -> dict:
        """The held-out loss of this checkpoint, computed once for all its chains (samplers) and reruns
        (heldout_path)."""
        from study.atomic import write_json

        if (res := cached_heldout(self.cfg, self.checkpoint)) is not None:
            return res
        res = scorer(self.unet)
        if res:
            write_json(heldout_path(self.cfg, self.checkpoint), res)
        return res

    def evaluate(self, sampler: str, steps: int, g: float) -> dict:
        return self._calls(self.evaluator.evaluate(self.unet, sampler, steps, g), steps, g)

    def slice_stats(self, sampler: str, steps: int, g: float, index: int, parts: int) -> dict:
        return self.evaluator.slice_stats(self.unet, sampler, steps, g, index, parts)

    def merge(self, slices: list[dict], steps: int, g: float) -> dict:
        return self._calls(self.evaluator.merge_slices(slices), steps, g)


class _Sliced:
    """One evaluation split over `parts` Ray actors (each its slice of the samples, its own fixed noise), merged
    exactly from their feature sums. The actors are reserved together in a placement group: chains that each
    held some of their slices' resources and waited for the rest would deadlock the cluster."""

    def __init__(self, cfg: StudyConfig, cfg_dict: dict, prepared_dir: str, chain: Chain, parts: int):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": cfg.eval.cpus_per_eval, **({"GPU": cfg.eval.gpus_per_eval} if cfg.eval.gpus_per_eval else {})}
        self.pg = placement_group([bundle] * parts, strategy="SPREAD")
        self.parts, self.actors = parts, []
        try:  # the chain's try/finally starts after this: a failure here must not leave the group reserved
            ray.get(self.pg.ready())
            actor = ray.remote(_Loaded)
            self.actors = [actor.options(num_cpus=cfg.eval.cpus_per_eval, num_gpus=cfg.eval.gpus_per_eval,
                                         scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i))
                           .remote(cfg_dict, prepared_dir, chain.task, chain.checkpoint) for i in range(parts)]
        except BaseException:
            self.close()
            raise

    def evaluate(self, sampler: str, steps: int, g: float) -> dict:
        import ray

        slices = ray.get([a.slice_stats.remote(sampler, steps, g, i, self.parts) for i, a in enumerate(self.actors)])
        return ray.get(self.actors[0].merge.remote(slices, steps, g))

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.pg)


def run_chain(cfg_dict: dict, prepared_dir: str, chain: Chain, rung: dict, storage_url: str) -> list[dict]:
    """Search every cell of a chain (one loaded model; or its eval.fid_slices actors) and return its rows."""
    from study.schedulers import LCM_DEFAULT_GRID, make_sampler, sampler_settings, training_scheduler

    cfg = from_dict(cfg_dict)
    if chain.loss_only:
        score_loss(cfg_dict, prepared_dir, chain.checkpoint)
        return chain_rows(cfg, chain, rung, None)
    parts = fid_slices(cfg, chain)
    model = (_Sliced(cfg, cfg_dict, prepared_dir, chain, parts) if parts > 1
             else _Loaded(cfg_dict, prepared_dir, chain.task, chain.checkpoint))
    storage = open_storage(storage_url)
    # A distilled student's LCM grid is its distillation's (distill.skip_grid; study.sampling reads it off the UNet).
    grid = cfg.distill.skip_grid if chain.sampler == "lcm" and cfg.distill.skip_grid != LCM_DEFAULT_GRID else None
    settings = sampler_settings(make_sampler(chain.sampler, training_scheduler(cfg.model.prediction_type),
                                             cfg.eval.timestep_spacing, lcm_grid=grid))
    lo, hi = cfg.eval.guidance_min, cfg.eval.guidance_max
    fingerprint = checkpoint_fingerprint(chain.checkpoint)
    prev = None
    try:
        for cell in chain.cells():
            def evaluate(g, steps=cell.steps):
                res = model.evaluate(chain.sampler, steps, g)
                res["sampler_settings"] = str(settings)
                return res

            seeds = [min(max(cfg.eval.default_guidance, lo), hi)] + ([prev] if prev is not None else [])
            search_cell(cell, evaluate, storage, cfg.eval, seeds, objective=chain.objective,
                        fixed=list(chain.fixed_guidance) if chain.fixed_guidance is not None else None,
                        checkpoint=fingerprint)
            prev = best_guidance(cell, storage, chain.objective)
    finally:
        if parts > 1:
            model.close()
    return chain_rows(cfg, chain, rung, storage)


def _trials_target(cfg: StudyConfig, chain: Chain) -> int:
    if chain.loss_only:
        return 1
    if chain.fixed_guidance is not None:
        return len(chain.fixed_guidance)
    return len(cfg.eval.grid) if cfg.eval.search == "grid" else cfg.eval.n_trials


def chain_done(cfg: StudyConfig, chain: Chain, storage) -> bool:
    """Whether every cell of a chain has its trials, of the chain's checkpoint as it is now (a loss-only chain: its
    loss is kept)."""
    if chain.loss_only:
        return cached_heldout(cfg, chain.checkpoint) is not None
    fingerprint = checkpoint_fingerprint(chain.checkpoint)
    return all(len(completed_results(c, storage, fingerprint)) >= _trials_target(cfg, chain) for c in chain.cells())


def _cancel_running(refs) -> None:
    """Force-cancel the chains still running. A finished one is left alone: Ray (2.60) aborts the driver with a
    failed check ("Tried to complete task that was not pending") when a force-cancel meets a task whose reply is
    in, which quick chains (a loss-only budget's few seconds) made likely."""
    import ray

    refs = list(refs)
    if not refs:
        return
    _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in running:
        ray.cancel(ref, force=True)


def run_eval_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, chains: list[Chain],
                  rungs: dict[int, dict], storage_url: str, progress: bool = True, name: str = "evaluate") -> dict:
    """Submit every unfinished chain as a Ray task; rows reach the results table as trials complete."""
    import ray
    from tqdm.auto import tqdm

    storage = open_storage(storage_url)
    watch = StorageWatch(storage_url)
    space = study_namespace(run_dir, storage_url)  # this run folder's studies, apart from others in the storage
    chains = [replace(ch, namespace=space) for ch in chains]
    todo = [ch for ch in chains if not chain_done(cfg, ch, storage)]
    remote = ray.remote(run_chain)
    cfg_dict = to_dict(cfg)
    # Biggest models first: the longest chains start early and the tail of the grid is short.
    todo.sort(key=lambda c: (-rungs[c.width]["normalized_cost"] * sum(c.steps), c.sampler))
    # A chain split over FID slices is a coordinator (no resources; its slice actors hold them): at most as many
    # in flight as the cluster has room for their slices, so idle coordinators do not pile up.
    have = ray.cluster_resources()
    room = slice_room(cfg, have)
    slices = max([fid_slices(cfg, c) for c in todo], default=1)
    if slices > 1 and ensure_ray(cfg):  # a local Ray is a fixed machine: slices that never fit would wait forever
        for kind, per in (("CPU", cfg.eval.cpus_per_eval), ("GPU", cfg.eval.gpus_per_eval)):
            if slices * per > have.get(kind, 0):
                raise ConfigError(f"eval.fid_slices={slices} x {per:g} {kind}s per slice, this machine's Ray has "
                                  f"{have.get(kind, 0):g}: lower eval.fid_slices or eval.cpus_per_eval/gpus_per_eval")

    def submit(ch: Chain):
        parts = fid_slices(cfg, ch)
        res = ({"num_cpus": 0, "num_gpus": 0} if parts > 1
               else {"num_cpus": cfg.eval.cpus_per_eval, "num_gpus": cfg.eval.gpus_per_eval})
        return remote.options(max_retries=cfg.eval.max_retries, retry_exceptions=True, **res).remote(
            cfg_dict, str(prepared_dir), ch, rungs[ch.width], storage_url)

    queue = list(todo)
    pending: dict = {}

    def fill():
        while queue and (fid_slices(cfg, queue[0]) == 1
                         or sum(fid_slices(cfg, c) for c in pending.values()) + fid_slices(cfg, queue[0]) <= room
                         or not pending):
            ch = queue.pop(0)
            pending[submit(ch)] = ch

    fill()
    failed = []

    written = [-1]  # rows in the table after the last write
    training_hash = identity.training_hash(to_dict(cfg))
    rows_of: dict[int, list[dict]] = {}  # chain index -> its rows when last read

    def sync(changed=None) -> int:
        """Rebuild the chains' rows from the Optuna studies (the source of truth) into the table.

        changed: the chains to read again (default all); only the running and just-finished chains gain trials,
        and reading a chain's studies costs the driver CPU the evaluations need. Completed trials never
        change, so the table is rewritten only when their number has."""
        for i, ch in enumerate(chains):
            if changed is None or i not in rows_of or id(ch) in changed:
                rows_of[i] = chain_rows(cfg, ch, rungs[ch.width], storage, training_hash)
        rows = [r for i in range(len(chains)) for r in rows_of[i]]
        if len(rows) != written[0]:
            upsert_results(run_dir, rows)
            written[0] = len(rows)
        return len(rows)

    total = sum(len(c.steps) * _trials_target(cfg, c) for c in chains)
    desc = "evaluate: guidance search" if name == "evaluate" else f"{name}"
    bar = tqdm(total=total, initial=min(total, sync()), unit="eval", desc=desc, disable=not progress)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=10.0)
        try:
            watch.check()  # before the table is rebuilt from a database that may be another, empty one
        except StorageVanished:
            _cancel_running(pending)
            bar.close()
            raise
        changed = {id(c) for c in pending.values()}  # the running chains and (below) those just finished
        for ref in ready:
            ch = pending.pop(ref)
            try:
                ray.get(ref)
            except Exception as err:  # a chain that failed after its retries: keep going, report it
                if is_disk_full(err):  # but not on a full disk: every other chain would fail the same way
                    hush_unread_failures()
                    _cancel_running(pending)
                    bar.close()
                    raise
                failed.append(f"{ch.experiment} evaluation of w{ch.width} at {ch.train_images} images, {ch.sampler}: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            bar.set_postfix_str(f"w{ch.width} {ch.sampler} done")
        fill()
        bar.update(min(total, sync(changed)) - bar.n)
    bar.close()
    watch.check()
    return {"chains": len(chains), "evaluated": len(todo), "failed": failed}
