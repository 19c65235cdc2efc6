"""The post-hoc EMA experiment's config section (StudyConfig.ema) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from study.errors import check as _check


@dataclass
class EmaConfig:
    """Each base size's final weights under several EMA lengths, reconstructed after training (EDM2's post-hoc
    EMA, study.phema) and scored at the reference cell: the best EMA length per size, and whether a size
    comparison made at the fixed train.ema_decay changes at each size's best."""

    enabled: bool = False  # needs train.phema_snapshots > 0 when the base trained
    sigma_rels: List[float] = field(default_factory=lambda: [0.03, 0.05, 0.08, 0.12, 0.18])  # EDM2's range
    guidance: Optional[float] = None  # None: eval.default_guidance (one fixed guidance: the same for every length)


def validate(cfg) -> None:
    """The EMA lengths: relative widths a power function has, and snapshots to reconstruct them from."""
    o = cfg.ema
    _check(len(o.sigma_rels) > 0 and all(0 < x < 0.28 for x in o.sigma_rels), "ema.sigma_rels",
           "relative EMA widths in (0, 0.28) (EDM2 sweeps 0.03-0.2)", list(o.sigma_rels))
    _check(not o.enabled or cfg.train.phema_snapshots > 0, "ema.enabled",
           "train.phema_snapshots > 0 (the base runs must store post-hoc EMA snapshots)", o.enabled)
    _check(o.guidance is None or o.guidance >= 1.0, "ema.guidance", "a guidance scale >= 1, or null", o.guidance)
