"""The training grid of an experiment: one Ray Tune trial per (size, seed), each a Ray Train + DeepSpeed job."""

from __future__ import annotations

import os
from pathlib import Path

from study.config import StudyConfig, to_dict
from study.identity import stable_hash, training_hash
from study.runfolder import run_uuid
from sweeps.train_progress import GridProgress, StopOnFullDisk, tracebacks_to_log


def _trial(config: dict, cfg_dict: dict, run_dir: str, prepared_dir: str, job: dict | None = None,
           inline: bool = False, jobs: dict | None = None) -> None:
    """A Tune trial: train one size (a Ray Train job, or in the trial itself for one worker); report its summary.
    jobs: experiment -> job, for a grid of several experiments (the trial's config names its experiment)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.config import from_dict
    from trainers import train_size

    width, seed = _size(config)
    if jobs is not None:
        job = jobs[config["size"]["experiment"]]
    summary = train_size(from_dict(cfg_dict), width, seed, run_dir, prepared_dir, progress=False,
                         callbacks=[TuneReportCallback()], recipe=job["recipe"],
                         init_from=(job["sources"] or {}).get(f"{width}-{seed}"), train=job["train"],
                         subdir=job["subdir"], options=job["options"], inline=inline, report=tune.report)
    tune.report({"done": True, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}})


def concurrent_trials(cfg: StudyConfig) -> int | None:
    """How many trials may run at once: the config's limit, or on a local Ray as many as fit.

    Each trial's driver holds 0.01 CPU beside its workers, so on a fixed machine n trials of whole-CPU
    workers would ask for n x 0.01 more than is there and the last one would wait forever; an
    autoscaling cluster adds nodes instead, so there it is left unlimited."""
    import ray

    from trainers.run import use_gpu

    if cfg.sweep.max_concurrent_trials:
        return cfg.sweep.max_concurrent_trials
    if cfg.resources.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    res = ray.cluster_resources()
    t = cfg.train
    gpus = res.get("GPU", 0) if use_gpu(t.use_gpu) else 0
    per_trial = trial_cpus(t)
    slots = min(gpus // t.num_workers, res.get("CPU", 1) // per_trial) if gpus else res.get("CPU", 1) // per_trial
    return max(1, int(slots))


def inline_training(train_cfg) -> bool:
    """Whether the grid's trials train in their own process: one worker per run has no data-parallel group
    for Ray Train to coordinate, and skipping its controller and worker processes saves about half a
    minute of CPU per run (benchmarks/train_launch.py). Runs of several workers go through Ray Train."""
    return train_cfg.num_workers == 1


def trial_cpus(train_cfg) -> float:
    """CPUs one trial occupies, wherever they are held: its workers' and 0.01 for its driver (inline, the
    one worker is the trial's own actor: trial_resources)."""
    return train_cfg.num_workers * train_cfg.cpus_per_worker + 0.01


def trial_resources(train_cfg, inline: bool, placement: dict | None = None) -> dict:
    """What a trial's actor holds: almost nothing when it drives a Ray Train job, the worker's share inline
    (placement: the GPU kind resource of its memory plan; a Ray Train job's workers ask for it themselves)."""
    from trainers.run import use_gpu

    if not inline:
        return {"CPU": 0.01}  # the driver itself needs (almost) nothing; the Ray Train worker holds the rest
    return {"CPU": trial_cpus(train_cfg), **({"GPU": 1} if use_gpu(train_cfg.use_gpu) else {}), **(placement or {})}


def grid_placements(cfg: StudyConfig, jobs: dict, sizes: dict) -> dict:
    """(experiment, width) -> the GPU kind resource each run asks for (its memory plan's; {} without a cluster
    file or on CPU). A width that fits no GPU kind is refused here, before any trial starts."""
    from study.config import with_train
    from trainers.run import run_plan, use_gpu

    out = {}
    for name, job in jobs.items():
        c = with_train(cfg, job["train"])
        for width in sorted({w for w, _ in sizes[name]}):
            row = run_plan(c, job["recipe"], width, use_gpu(c.train.use_gpu))
            out[(name, width)] = {row.kind: 1} if row is not None and c.resources.cluster_yaml else {}
    return out


def placed_resources(cfg: StudyConfig, jobs: dict, sizes: dict, train_cfg, inline: bool, default: str):
    """tune.with_resources' per-trial resources: the trial's share (trial_resources) with its run's GPU kind, so the
    autoscaler starts that node type. Refuses a width that fits no GPU kind (grid_placements) before any trial."""
    from ray import tune

    placements = grid_placements(cfg, jobs, sizes)

    def resources(config: dict):
        name = (config.get("size") or {}).get("experiment", default)
        placement = placements.get((name, _size(config)[0]))
        return tune.PlacementGroupFactory([trial_resources(train_cfg, inline, placement)])

    return resources


def experiment_name(cfg: StudyConfig, run_dir: Path, experiment: str = "base", sizes=None, job=None) -> str:
    """The Tune experiment of a grid: a new run folder, grid or training config is a new Tune experiment."""
    sizes = sizes or [(w, s) for w in cfg.model.widths for s in cfg.sweep.seeds]
    key = {"run": run_uuid(run_dir), "grid": [sorted({w for w, _ in sizes}), sorted({s for _, s in sizes})],
           "train": training_hash(to_dict(cfg))}
    if experiment == "base":  # the name base grids had before experiments existed: old run folders resume
        return "train-grid-" + stable_hash(key, 8)
    return f"{experiment}-grid-" + stable_hash({**key, "sizes": sorted(sizes), "job": job}, 8)


def _job(cfg: StudyConfig, experiment, sources: dict | None) -> dict:
    """What a trial of an experiment needs beyond its (width, seed): recipe, train overrides, folder, options and
    the base milestone each run starts from."""
    return {"recipe": experiment.recipe if experiment is not None else "base",
            "train": experiment.train_overrides(cfg) if experiment is not None else None,
            "subdir": experiment.subdir if experiment is not None else "train",
            "options": experiment.options(cfg) if experiment is not None else None,
            "sources": {f"{w}-{s}": str(p) for (w, s), p in (sources or {}).items()} or None}


def run_train_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, progress: bool = True,
                   experiment=None, sources: dict | None = None) -> dict:
    """Train every size x seed of an experiment; rerunning restores the Tune experiment (finished trials are
    not retrained, unfinished ones resume from their checkpoints, errored ones are retried).

    sources: (width, seed) -> the base milestone each derived run starts from; only those sizes are trained."""
    return run_train_wave(cfg, run_dir, prepared_dir, [(experiment, sources)], progress)


def run_train_wave(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, parts: list[tuple], progress: bool = True
                   ) -> dict:
    """Train the runs of several experiments that depend on nothing still to train (e.g. distillation,
    super-resolution and DreamBooth, each from the base checkpoints) as one Tune grid: the trials of all of them
    share the cluster at once, and inline their actors (torch and DeepSpeed imported) go from one experiment's
    run to the next instead of each experiment starting its own (about 25 s per experiment on 2 cores).

    parts: (experiment, sources) pairs, as run_train_grid takes them. Experiments whose trials need different
    resources or launchers (inline or Ray Train) are trained one grid after the other."""
    from study.config import with_train

    parts = [(e, s, _job(cfg, e, s)) for e, s in parts if s is None or s]  # sources {}: nothing to derive from
    launch = {}
    for e, s, job in parts:
        t = with_train(cfg, job["train"]).train
        launch.setdefault((inline_training(t), tuple(sorted(trial_resources(t, inline_training(t)).items()))),
                          []).append((e, s, job))
    out = {"experiments": [], "trials": 0, "errors": [], "trial_seconds": {}}
    for group in launch.values():
        res = _fit_grid(cfg, run_dir, prepared_dir, group, progress)
        out["experiments"].append(res["experiment"])
        out["trials"] += res["trials"]
        out["errors"] += res["errors"]
        out["trial_seconds"].update(res["trial_seconds"])
    # The Tune experiment's path (the first, where there are several; None when there was nothing to train).
    out["experiment"] = out["experiments"][0] if out["experiments"] else None
    return out


def _fit_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, parts: list[tuple], progress: bool) -> dict:
    """One Tune grid over every (experiment, width, seed) of parts [(experiment, sources, job)], resumable."""
    from ray import tune

    from study.config import with_train

    names = [e.name if e is not None else "base" for e, _, _ in parts]
    sizes = {n: sorted(s) if s is not None else [(w, sd) for w in cfg.model.widths for sd in cfg.sweep.seeds]
             for n, (_, s, _) in zip(names, parts)}
    jobs = {n: job for n, (_, _, job) in zip(names, parts)}
    storage = cfg.sweep.storage_path or str((Path(run_dir) / "ray").resolve())
    train_cfgs = {n: with_train(cfg, jobs[n]["train"]).train for n in names}
    first = train_cfgs[names[0]]
    inline = inline_training(first)  # the same for every part (run_train_wave groups by it)
    single = len(parts) == 1
    if single:  # one experiment: its historical name, trial config and parameters (old run folders resume)
        name = experiment_name(cfg, run_dir, names[0], sizes[names[0]], jobs[names[0]])
        params = {"job": jobs[names[0]]}
    else:
        name = "+".join(names) + "-grid-" + stable_hash(
            {"run": run_uuid(run_dir), "train": training_hash(to_dict(cfg)),
             "parts": {n: {"sizes": sizes[n], "job": jobs[n]} for n in names}}, 8)
        params = {"jobs": jobs}
    resources = placed_resources(cfg, jobs, sizes, first, inline, names[0])
    # The config travels as a constant, not in the search space: Tune would print it with every trial.
    trainable = tune.with_resources(
        tune.with_parameters(_trial, cfg_dict=to_dict(cfg), run_dir=str(Path(run_dir).resolve()),
                             prepared_dir=str(Path(prepared_dir).resolve()), inline=inline, **params),
        resources)
    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):  # the run config, callbacks included, is restored with it
        # Restoring unpickles Tune's files: refuse ones this user does not own or others may write.
        from study.trust import check_restorable

        check_restorable(path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        # Widest first: with more trials than slots, the longest jobs start first.
        space = {"size": tune.grid_search([{**({} if single else {"experiment": n}), "width": w, "seed": s}
                                           for n in names
                                           for w, s in sorted(sizes[n], key=lambda x: (-x[0], x[1]))])}
        if single and parts[0][1] is None:  # the base grid keeps its historical search space (and trial order)
            space = {"width": tune.grid_search(sorted(cfg.model.widths, reverse=True)),
                     "seed": tune.grid_search(list(cfg.sweep.seeds))}
        total = sum(train_cfgs[n].total_images * len(sizes[n]) for n in names)
        desc = "train grid" if names == ["base"] else f"{'+'.join(names)}: train"
        bar = GridProgress(total, sum(len(v) for v in sizes.values()), progress, desc=desc)
        tuner = tune.Tuner(
            trainable, param_space=space,
            # Inline, a finished run's actor (torch, DeepSpeed imported) trains the next size.
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent_trials(cfg), reuse_actors=inline),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[bar, StopOnFullDisk()],
                                      # Inline, a worker's failure is the trial's: Tune gives it Ray Train's
                                      # restarts (sweep.max_failures) on top of the trial's own retries.
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.trial_retries + (
                                          cfg.sweep.max_failures if inline else 0))))
    with tracebacks_to_log():
        grid = tuner.fit()
    _raise_if_disk_full(grid)
    errors = [f"{(r.config.get('size') or {}).get('experiment', names[0])} width={_size(r.config)[0]} "
              f"seed={_size(r.config)[1]}: {str(r.error).strip().splitlines()[-1]}" for r in grid if r.error is not None]
    seconds: dict[str, float] = {}  # each experiment's trials' own time (its share of a shared grid)
    for r in grid:
        n = (r.config.get("size") or {}).get("experiment", names[0])
        seconds[n] = seconds.get(n, 0.0) + float((r.metrics or {}).get("time_total_s", 0.0) or 0.0)
    return {"experiment": path, "trials": len(grid), "errors": errors, "trial_seconds": seconds}


def _raise_if_disk_full(grid) -> None:
    """One line for the study when a trial stopped on a full disk, not a failed size among others."""
    from study.errors import DiskFullError, is_disk_full, user_message

    for r in grid:
        if r.error is not None and is_disk_full(r.error):
            raise DiskFullError(user_message(r.error) or str(r.error).strip().splitlines()[-1]) from None


def _size(config: dict) -> tuple[int, int]:
    """(width, seed) of a trial's config, in either search-space form."""
    if "size" in config:
        return config["size"]["width"], config["size"]["seed"]
    return config["width"], config["seed"]
