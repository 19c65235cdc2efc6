"""Synthetic results tables with known laws and known crossovers, for tests and demos.

FID at the best guidance of a cell is
    FID = E + A / N^alpha + B / D^beta + K_s * steps^-p,
so at a sampling cost c = n_w * steps (n_w the normalized cost of width w) a size's curve
is F_w + K_s (c / n_w)^-p: the small model, with more steps for the same cost, wins at low
cost and the big one, with the lower floor F_w, wins at high cost. They cross where
F_s - F_l = K_s (n_l^p - n_s^p) c^-p, which `true_crossover` solves in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.results import mark_best


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes, budgets, grid and the true law of a synthetic sweep."""

    # Three rungs of the paper's ladder (measured diffusers params and GFLOPs, NOTES.md).
    widths: tuple[int, ...] = (64, 128, 320)
    params: tuple[float, ...] = (37.5e6, 142.2e6, 859.5e6)
    gflops: tuple[float, ...] = (52.8, 159.5, 803.3)
    train_images: tuple[float, ...] = (1e6, 2e6, 4e6, 8e6, 16e6)
    samplers: dict[str, float] = field(default_factory=lambda: {"ddim": 1.0, "dpm++": 0.5})
    steps: tuple[int, ...] = (4, 6, 8, 10, 14, 20, 30, 50, 100, 250)
    guidances: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    seeds: tuple[int, ...] = (0,)
    # FID floor terms: chosen so the 39M..866M spread is ~4 FID as in the paper's table.
    E: float = 15.0
    A: float = 1200.0
    alpha: float = 0.3
    B: float = 2000.0
    beta: float = 0.4
    K: float = 60.0  # few-step penalty, multiplied by the sampler's factor
    p: float = 1.0
    guidance_curvature: float = 0.15  # FID added per squared unit away from the best scale
    fid_std: float = 0.15  # evaluation noise of one FID number (bootstrap over samples)
    seed_sd: float = 0.0  # spread between training seeds of one size
    fid_floor: float = 1.5  # real-vs-real FID at the same sample count
    num_samples: int = 1000

    def normalized_cost(self, i: int) -> float:
        """GFLOPs of width i over those of the largest width (the paper's 866M role)."""
        return self.gflops[i] / max(self.gflops)


def true_floor(spec: SyntheticSpec, i: int, train_images: float) -> float:
    """E + A / N^alpha + B / D^beta: the FID of size i with infinitely many steps."""
    return spec.E + spec.A * spec.params[i] ** -spec.alpha + spec.B * train_images ** -spec.beta


def true_fid(spec: SyntheticSpec, i: int, train_images: float, sampler: str,
             steps: float | np.ndarray) -> np.ndarray:
    """True FID of size i at the best guidance."""
    k = spec.K * spec.samplers[sampler]
    return true_floor(spec, i, train_images) + k * np.asarray(steps, float) ** -spec.p


def true_crossover(spec: SyntheticSpec, small: int, large: int, sampler: str,
                   train_images: float) -> float:
    """Sampling cost where sizes `small` and `large` have equal true FID (NaN if none)."""
    k = spec.K * spec.samplers[sampler]
    gap = true_floor(spec, small, train_images) - true_floor(spec, large, train_images)
    ns, nl = spec.normalized_cost(small), spec.normalized_cost(large)
    num = k * (nl ** spec.p - ns ** spec.p)
    if gap <= 0 or num <= 0:
        return float("nan")
    return float((num / gap) ** (1.0 / spec.p))


def best_guidance(spec: SyntheticSpec, i: int, steps: int) -> float:
    """True optimal guidance: larger with more steps, smaller for bigger models."""
    rel = np.log2(spec.params[i] / min(spec.params))
    return float(np.clip(2.5 + 0.8 * np.log2(steps / 4) - 0.4 * rel, 1.5, 8.0))


def true_alignment(spec: SyntheticSpec, i: int, train_images: float, steps: int,
                   guidance: float) -> float:
    """Alignment score: grows with size, training, steps and guidance (higher is better)."""
    size = 0.004 * np.log10(spec.params[i] / 1e8)
    train = -0.01 * (train_images / max(spec.train_images)) ** -0.3
    return float(0.32 + size + train - 0.03 / steps + 0.004 * np.log(guidance))


def make_results(spec: SyntheticSpec | None = None, seed: int = 0) -> pd.DataFrame:
    """A results table shaped like the sweep's, drawn from the spec's true laws."""
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(seed)
    rows = []
    for i, width in enumerate(spec.widths):
        nc = spec.normalized_cost(i)
        for run_seed in spec.seeds:
            offset = rng.normal(0.0, spec.seed_sd) if spec.seed_sd else 0.0
            for d in spec.train_images:
                for sampler in spec.samplers:
                    for steps in spec.steps:
                        base = float(true_fid(spec, i, d, sampler, steps)) + offset
                        g_best = best_guidance(spec, i, steps)
                        rows += _cell_rows(spec, rng, i, width, nc, run_seed, d, sampler,
                                           steps, base, g_best)
    return mark_best(pd.DataFrame(rows))


def _cell_rows(spec: SyntheticSpec, rng: np.random.Generator, i: int, width: int,
               nc: float, run_seed: int, d: float, sampler: str, steps: int, base: float,
               g_best: float) -> list[dict]:
    rows = []
    flops = spec.gflops[i] * 1e9
    for g in spec.guidances:
        fid = base + spec.guidance_curvature * (g - g_best) ** 2
        fid += rng.normal(0.0, spec.fid_std) if spec.fid_std else 0.0
        align = true_alignment(spec, i, d, steps, g) + rng.normal(0.0, 0.001)
        rows.append({
            "run_id": f"synthetic-w{width}-s{run_seed}", "trial_id": f"g{g}",
            "width": width, "params": int(spec.params[i]), "gflops": spec.gflops[i],
            "normalized_cost": nc, "train_images": int(d),
            "train_flops": 3.0 * flops * d,  # forward + backward = 3 forward passes
            "train_flops_paper": flops * d / 2048,  # paper: GFLOPs x iterations (batch 2048)
            "sampler": sampler, "steps": steps, "timestep_spacing": "trailing",
            "guidance": g, "sampling_cost": nc * steps, "fid": fid, "kid": fid / 1000.0,
            "alignment": align, "num_samples": spec.num_samples, "seed": run_seed,
            "checkpoint": f"images-{int(d)}", "config_hash": "synthetic", "version": "0",
            "fid_std": spec.fid_std, "kid_std": spec.fid_std / 1000.0,
            "alignment_std": 0.001, "fid_floor": spec.fid_floor})
    return rows


def write_run(run_dir: str | Path, spec: SyntheticSpec | None = None, seed: int = 0,
              fmt: str = "parquet") -> Path:
    """Write a synthetic results table into a run folder; return the table's path."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    df = make_results(spec, seed)
    path = run / f"results.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


# A family of two-size tables with known answers: the gap G(c) = FID_large - FID_small as a
# function of sampling cost c (positive: the smaller size wins), and its true crossings.
#   once:  the small size wins below c1, the large one above (one crossing at c1)
#   twice: the large size wins only between c1 and c2 (two crossings)
#   never: the small size is better everywhere by at least 1 FID
#   tied:  both sizes lie on one curve (equal values wherever both are evaluated)
# and near-misses, no crossing but a gap that reaches zero (the hardest cases for a test):
#   touch:   the gap touches zero at c = 12 and turns back
#   edge:    the gap falls to zero at the top of the overlap (c = 62.5), a crossing just beyond
#   plateau: the large size catches up at c = 12 and ties from there on
FAMILY_CROSSINGS = {"once": (12.0,), "twice": (8.0, 30.0), "never": (), "tied": (),
                    "touch": (), "edge": (), "plateau": ()}
FAMILY_VERDICT = {"once": "crossing", "twice": "crossing", "never": "no evidence of crossing",
                  "tied": "tied within noise", "touch": "no evidence of crossing",
                  "edge": "no evidence of crossing", "plateau": "no evidence of crossing"}
NEAR_MISSES = ("tied", "never", "touch", "edge", "plateau")  # no crossing at all


@dataclass(frozen=True)
class FamilySpec:
    """One member of the family: its shape, seeds, noise and grid."""

    kind: str = "once"
    seeds: tuple[int, ...] = (0,)
    fid_std: float = 0.3  # evaluation noise of one FID; 0: none, and no fid_std column
    seed_sd: float = 0.0  # spread of whole curves between training seeds
    steps: tuple[int, ...] = (4, 6, 8, 10, 14, 20, 30, 50, 100, 250)
    normalized_costs: tuple[float, float] = (0.25, 1.0)  # small, large
    widths: tuple[int, int] = (64, 128)
    params: tuple[float, float] = (37.5e6, 142.2e6)
    scale: float = 2.0  # FID size of the gap's shape


def family_base(cost: np.ndarray) -> np.ndarray:
    """The smaller size's true FID against sampling cost: a floor plus a few-step penalty."""
    return 20.0 + 10.0 / np.asarray(cost, float)


def family_gap(spec: FamilySpec, cost: np.ndarray) -> np.ndarray:
    """True gap G(c) = FID_large - FID_small of the spec's kind (positive: small wins)."""
    lc = np.log(np.asarray(cost, float))
    cross = [np.log(c) for c in FAMILY_CROSSINGS[spec.kind]]
    if spec.kind == "once":
        return -spec.scale * (lc - cross[0])
    if spec.kind == "twice":  # the large size's lead peaks at 1.7 scale between the crossings
        return 2.0 * spec.scale * (lc - cross[0]) * (lc - cross[1])
    if spec.kind == "never":
        return spec.scale * (1.0 + 0.2 * (lc - np.log(4.0)) ** 2)
    if spec.kind == "tied":
        return np.zeros_like(lc)
    if spec.kind == "touch":
        return 0.5 * spec.scale * (lc - np.log(12.0)) ** 2
    if spec.kind == "edge":
        return 0.5 * spec.scale * (np.log(62.5) - lc)
    if spec.kind == "plateau":
        return spec.scale * np.maximum(np.log(12.0) - lc, 0.0)
    raise ValueError(f"unknown family kind {spec.kind!r}: use one of {', '.join(FAMILY_CROSSINGS)}")


def family_table(spec: FamilySpec, seed: int = 0) -> pd.DataFrame:
    """A results table of two sizes (one sampler, budget and guidance) with the spec's gap."""
    steps = np.asarray(spec.steps, float)
    sizes = []
    for i, (width, nc) in enumerate(zip(spec.widths, spec.normalized_costs)):
        cost = nc * steps
        truth = family_base(cost) + (family_gap(spec, cost) if i == 1 else 0.0)
        sizes.append((width, spec.params[i], nc, truth))
    return curves_table(sizes, spec.steps, spec.seeds, spec.fid_std, spec.seed_sd, seed)


def curves_table(sizes: list[tuple[int, float, float, np.ndarray]], steps: tuple[int, ...],
                 seeds: tuple[int, ...], fid_std: float, seed_sd: float, seed: int = 0
                 ) -> pd.DataFrame:
    """A results table (one sampler, budget and guidance) of sizes (width, params, normalized
    cost, true FID per step count): each seed shifts its curve by N(0, seed_sd), each FID gets
    N(0, fid_std), recorded as fid_std when positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for width, params, nc, truth in sizes:
        for run_seed in seeds:
            offset = rng.normal(0.0, seed_sd) if seed_sd else 0.0
            noise = rng.normal(0.0, fid_std, len(steps)) if fid_std else 0.0
            fid = truth + offset + noise
            for k, st in enumerate(steps):
                rows.append({"width": width, "params": int(params), "normalized_cost": nc,
                             "train_images": 1_000_000, "train_flops": 1e15 * params,
                             "sampler": "ddim", "steps": int(st), "guidance": 3.0,
                             "sampling_cost": nc * st, "fid": float(fid[k]), "seed": run_seed,
                             "timestep_spacing": "trailing"})
    df = pd.DataFrame(rows)
    if fid_std:
        df["fid_std"] = fid_std
    return df


# The crossing benchmark's ladder (issue 28): FID_w(c) = F_w + G n_w / c for widths 16, 32, 64
# at normalized costs 1/16, 1/4, 1 (FLOPs ~ width^2) over eleven step counts, the floors F_w set
# so that the pairs cross at these costs.
LADDER_CROSSINGS = {(16, 32): 7.5, (16, 64): 22.5, (32, 64): 45.0}


@dataclass(frozen=True)
class LadderSpec:
    """The ladder's noise, seeds and few-step penalty G."""

    fid_std: float = 1.0
    seeds: tuple[int, ...] = (0,)
    penalty: float = 100.0  # G: FID above the floor at one step (of the largest size's cost)
    floor: float = 10.0  # F of the largest size
    widths: tuple[int, int, int] = (16, 32, 64)
    params: tuple[float, float, float] = (0.4e6, 1.6e6, 6.3e6)
    normalized_costs: tuple[float, float, float] = (1 / 16, 1 / 4, 1.0)
    steps: tuple[int, ...] = (4, 7, 12, 21, 36, 64, 111, 194, 337, 588, 1024)


def ladder_table(spec: LadderSpec, seed: int = 0) -> pd.DataFrame:
    """A results table of the ladder, N(0, fid_std) on every FID of every seed."""
    n_top = spec.normalized_costs[-1]
    sizes = []
    for width, params, nc in zip(spec.widths, spec.params, spec.normalized_costs):
        # Crossing the largest size at c: F_w - F_top = G (n_top - n_w) / c.
        cross = LADDER_CROSSINGS.get((width, spec.widths[-1]))
        floor = spec.floor + (spec.penalty * (n_top - nc) / cross if cross else 0.0)
        cost = nc * np.asarray(spec.steps, float)
        sizes.append((width, params, nc, floor + spec.penalty * nc / cost))
    return curves_table(sizes, spec.steps, spec.seeds, spec.fid_std, 0.0, seed)


def pair_results(table: pd.DataFrame, rng: np.random.Generator, n_boot: int = 200
                 ) -> dict[tuple[int, int], dict]:
    """compare_pair on every pair of a synthetic table (one sampler, budget and guidance),
    resampled as the analysis does (draw_sizes: one set of resamples per size, the seed variance
    pooled) without the rest of it. With rng = default_rng(seed) it gives analyze_metric(table,
    "fid", n_boot, seed)'s pair rows exactly (tests/analysis/test_crossing_test.py), at a
    seventeenth of the cost: the crossing benchmark reads thousands of tables through it."""
    from analysis.crossovers import compare_pair
    from analysis.resample import draw_sizes

    sizes = []
    for width, g in table.groupby("width"):
        vals = g.pivot(index="steps", columns="seed", values="fid")
        cost = g.groupby("steps")["sampling_cost"].first().loc[vals.index].to_numpy()
        std = float(g["fid_std"].iloc[0]) if "fid_std" in g else 0.0
        sizes.append((width, cost, vals.to_numpy(), np.full(vals.shape, std)))
    boots = draw_sizes([(v, s) for _, _, v, s in sizes], n_boot, rng)
    out = {}
    for i, (ws, cs, vs, _) in enumerate(sizes):
        for j in range(i + 1, len(sizes)):
            wl, cl, vl, _ = sizes[j]
            out[(ws, wl)] = compare_pair(cs, vs.mean(axis=1), boots[i], cl, vl.mean(axis=1),
                                         boots[j], True, True)
    return out
