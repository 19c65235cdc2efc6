"""The guidance search: one Optuna study per cell (size, budget, sampler, steps), objective FID."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from study.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Cell:
    """One evaluation cell: a checkpoint, a sampler and a step count."""

    width: int
    seed: int
    train_images: int
    sampler: str
    steps: int
    spacing: str  # the resolved timestep spacing (recorded with every result)
    experiment: str = "base"  # the experiment whose checkpoint this is (sweeps.experiments)
    variant: str = ""  # another form of the checkpoint's weights (study.results.ResultRow.variant)
    namespace: str = ""  # the run folder's, in a storage other studies share (study_namespace)

    @property
    def study_name(self) -> str:
        # Ray's OptunaSearch and resumes both key on the name: one study per cell. The base experiment keeps
        # the names it had before experiments existed, so older run folders resume.
        prefix = "" if self.experiment == "base" else f"{self.experiment}-"
        suffix = f"-{self.variant}" if self.variant else ""
        space = f"{self.namespace}/" if self.namespace else ""
        return (f"{space}{prefix}w{self.width}-s{self.seed}-i{self.train_images}-{self.sampler}-{self.steps}-"
                f"{self.spacing}{suffix}")


def study_namespace(run_dir: str | Path, url: str) -> str:
    """What a run folder's study names start with in its Optuna storage: nothing in its own database (the default,
    in the run folder), its run id in any other. A cluster's one PostgreSQL holds every study run on it; named by
    cell alone, a second study (another name=, a --fresh rerun) would find the first one's trials complete under
    the same names and report their FIDs, of other checkpoints, as its own."""
    from study.runfolder import run_uuid

    if url == default_storage(run_dir):
        return ""
    ns = run_uuid(Path(run_dir))
    if not ns:
        raise ValueError(f"{run_dir} has no run id (run.json): the study must create its run folder first")
    return ns


# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the cluster installs psycopg2 (cluster.yaml, the test
# extra), so the URL that paper.yaml ships names that driver explicitly.
_BARE_DIALECTS = {"postgresql://": "postgresql+psycopg2://", "postgres://": "postgresql+psycopg2://"}
CONNECT_TIMEOUT_S = 10  # an unreachable server fails in seconds, not after the kernel's TCP retries


def storage_url(url: str) -> str:
    """The URL SQLAlchemy is given: a bare postgresql:// gets the installed driver, psycopg2."""
    for bare, full in _BARE_DIALECTS.items():
        if url.startswith(bare):
            return full + url[len(bare):]
    return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):  # several processes write one SQLite file; give each writer time to get the lock
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql+psycopg"):  # libpq's connect_timeout (psycopg2 and psycopg 3)
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def open_storage(url: str):
    """An Optuna storage from a URL (sqlite:///, postgresql://, ...) or a journal file path (*.log)."""
    if "://" in url:
        import sqlalchemy.exc

        url = storage_url(url)
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers that open a fresh database at once race to create Optuna's schema (PostgreSQL: "type
                # studydirection already exists"); the loser finds it made on its next try.
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(url)))


def check_storage(url: str) -> None:
    """Open the Optuna storage once before any training: a missing driver or an unreachable server is one
    line now, not a traceback after the training grid."""
    from study.redact import redact_text

    try:
        open_storage(url)
    except ImportError as err:  # Optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
        missing = getattr(err.__cause__, "name", None) or err.name or "its driver"
        raise UserError(f"sweep.optuna_storage {redact_text(url)}: the database driver {missing!r} is not "
                        f"installed: pip install it (PostgreSQL: psycopg2-binary, as cluster.yaml does) or "
                        f"use another URL") from err


class StorageVanished(UserError):
    """The Optuna database file was deleted or replaced while the study ran."""


class StorageWatch:
    """Notices a file-based Optuna storage (SQLite, journal) deleted or replaced under a running study: its
    workers would go on into a new empty database and the results table, rebuilt from it, would lose rows."""

    def __init__(self, url: str):
        self.path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None if "://" in url else url
        self.ident = self._ident()

    def _ident(self):
        try:
            st = os.stat(self.path)
            return st.st_dev, st.st_ino
        except (OSError, TypeError):
            return None

    def check(self) -> None:
        """Raise StorageVanished if the file is no longer the one the study started with."""
        if self.path and self._ident() != self.ident:
            raise StorageVanished(f"the Optuna database {self.path} was deleted or replaced while the study ran: "
                                  "the study stopped, nothing was published; rerun the same command to resume "
                                  "(the cells it held are evaluated again)")


def default_storage(run_dir: str | Path) -> str:
    """SQLite in the run folder."""
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


def _sampler(kind: str, seed: int):
    if kind == "gp":
        # Each evaluation is deterministic (fixed noise and prompts per cell): tell the GP so.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=2, deterministic_objective=True)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)


def _has_point(study, g: float) -> bool:
    # Not Optuna's enqueue_trial(skip_if_exists=True): that also skips a point whose trial failed, so a kill
    # during the seeded default guidance would drop that point on resume and change the search's result.
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                       TrialState.RUNNING)):
        p = t.system_attrs.get("fixed_params", t.params)
        if "guidance" in p and abs(float(p["guidance"]) - g) < 1e-9:
            return True
    return False


def checkpoint_fingerprint(folder) -> str:
    """What a cell's trials were evaluated on: a hash of the checkpoint's recorded files (sizes and SHA-256 sums,
    state.json's record, so nothing is re-hashed); "" for a folder that records none."""
    from study.identity import stable_hash
    from study.weights import FILES, read_state

    try:
        files = read_state(Path(folder)).get(FILES)
    except (OSError, UserError):
        return ""
    return stable_hash(files, 16) if files else ""


def _of_checkpoint(study, cell: Cell, storage, eval_cfg, checkpoint: str):
    """The cell's study, its trials of this checkpoint only. A study holding trials of another checkpoint under
    the same cell (a size folder deleted and retrained, a milestone rewritten) would report their FIDs as this
    checkpoint's: it is started over, and said so."""
    if not checkpoint:
        return study
    seen = study.user_attrs.get("checkpoint")
    if seen is None:  # a new study, or one written before studies recorded their checkpoint
        study.set_user_attr("checkpoint", checkpoint)
        return study
    if seen == checkpoint:
        return study
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    print(f"note: the guidance search {cell.study_name} held {done} trial(s) of another checkpoint (retrained "
          f"since): searched again for this one", flush=True)
    optuna.delete_study(study_name=cell.study_name, storage=storage)
    study = optuna.create_study(study_name=cell.study_name, storage=storage, direction="minimize",
                                sampler=_sampler(eval_cfg.optuna_sampler, eval_cfg.seed))
    study.set_user_attr("checkpoint", checkpoint)
    return study


def search_cell(cell: Cell, evaluate, storage, eval_cfg, seed_points: list[float], on_trial=None, *,
                objective: str = "fid", fixed: list[float] | None = None, checkpoint: str = "") -> list:
    """Run the cell's study to eval.n_trials complete trials (grid mode: every grid point); resumable.

    `evaluate(guidance) -> dict` must return at least the `objective` key (FID by default); the dict is stored
    on the trial so the results table can be rebuilt from the study alone. `fixed`: evaluate exactly these
    guidance scales and search nothing (tasks without guidance use [1.0]). `checkpoint`: the evaluated
    checkpoint's fingerprint (checkpoint_fingerprint): trials of another checkpoint in the study are dropped.
    """
    from optuna.study import MaxTrialsCallback

    lo, hi = eval_cfg.guidance_min, eval_cfg.guidance_max
    study = optuna.create_study(study_name=cell.study_name, storage=storage, direction="minimize",
                                load_if_exists=True, sampler=_sampler(eval_cfg.optuna_sampler, eval_cfg.seed))
    study = _of_checkpoint(study, cell, storage, eval_cfg, checkpoint)
    # A trial left RUNNING belongs to an evaluation that was killed: only one process owns a cell at a time.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
    if fixed is not None:
        points, target = list(fixed), len(fixed)
        lo, hi = min(lo, *fixed), max(hi, *fixed)
    elif eval_cfg.search == "grid":
        points, target = [min(max(g, lo), hi) for g in eval_cfg.grid], len(eval_cfg.grid)
    else:
        points, target = seed_points, eval_cfg.n_trials
    for g in dict.fromkeys(round(p, 6) for p in points):
        if not _has_point(study, g):
            study.enqueue_trial({"guidance": g})

    def run(trial) -> float:
        g = trial.suggest_float("guidance", lo, hi)
        t0 = time.time()
        res = evaluate(g)  # an exception marks the trial FAIL and propagates (optimize's catch=())
        res["eval_seconds"] = round(time.time() - t0, 2)
        trial.set_user_attr("result", json.dumps(res, default=float))
        if on_trial is not None:
            on_trial(trial.number, g, res)
        return float(res[objective])

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < target:
        study.optimize(run, callbacks=[MaxTrialsCallback(target, states=(TrialState.COMPLETE,))])
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def completed_results(cell: Cell, storage, checkpoint: str = "") -> list[tuple[int, float, dict]]:
    """(trial number, guidance, result dict) of every complete trial of a cell's study; none where the study's
    trials are of another checkpoint than `checkpoint` (a fingerprint; "" reads any)."""
    try:
        study = optuna.load_study(study_name=cell.study_name, storage=storage)
    except KeyError:
        return []
    if checkpoint and study.user_attrs.get("checkpoint", checkpoint) != checkpoint:
        return []
    return [(t.number, float(t.params["guidance"]), json.loads(t.user_attrs["result"]))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def best_guidance(cell: Cell, storage, objective: str = "fid") -> float | None:
    """The objective-optimal (FID-optimal) guidance of a cell so far (None before its first trial)."""
    done = completed_results(cell, storage)
    return min(done, key=lambda r: r[2][objective])[1] if done else None
