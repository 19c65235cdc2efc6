"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3):
track two power-function EMA profiles during training, store their snapshots, and after training reconstruct the
weights of any EMA length by least squares over the snapshots.

A power-function EMA with exponent g averages the weights seen up to time t with the density
p_t(s) = (g + 1) s^g / t^(g + 1) on [0, t]: its width relative to t is sigma_rel = sqrt((g + 1) / ((g + 2)^2 (g + 3)))
(the paper's Eq. 123), and tracking it online is theta_ema <- beta theta_ema + (1 - beta) theta with
beta = (1 - dt / t)^(g + 1) (Eq. 127). A snapshot is the tracked average at a time t_i; any profile (t, sigma_rel)
is approximated by the combination of snapshots whose densities best match its own in L2, which needs only the
inner products of two such densities (closed form below).

Time is counted in images seen (study convention: budgets in images), so beta depends on the batch only through
dt, and snapshots of runs with different batches are combined alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def exponent(sigma_rel: float) -> float:
    """The power-function exponent g of a relative width sigma_rel: the largest real root of
    g^3 + 7 g^2 + (16 - sigma_rel^-2) g + (12 - sigma_rel^-2) = 0 (Eq. 123 solved for g)."""
    if not 0 < sigma_rel < 0.28:  # g = 0 (a plain running mean) has sigma_rel = 0.2887: the widest profile
        raise ValueError(f"sigma_rel={sigma_rel}: expected a relative EMA width in (0, 0.28) (EDM2 uses 0.05-0.10)")
    k = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def sigma_rel_of(g: float) -> float:
    """The relative width of a power-function EMA with exponent g (Eq. 123)."""
    return float(np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))))


def beta(sigma_rel: float, images: int, batch: int) -> float:
    """The EMA decay of the step that ends at `images` images seen, `batch` images after the previous one."""
    return (1.0 - batch / images) ** (exponent(sigma_rel) + 1.0)


def overlap(t_a, g_a, t_b, g_b):
    """Inner product of two power-function densities p_{t_a, g_a} and p_{t_b, g_b} on [0, inf): with m the
    shorter of the two spans, (g_a + 1)(g_b + 1) m^(g_a + g_b + 1) / ((g_a + g_b + 1) t_a^(g_a + 1) t_b^(g_b + 1)).
    Arrays broadcast."""
    t_a, g_a, t_b, g_b = (np.asarray(x, dtype=np.float64) for x in (t_a, g_a, t_b, g_b))
    c = (g_a + 1) * (g_b + 1) / (g_a + g_b + 1)
    # Written as ratios so that large t (1e9 images) and large g (~70 for sigma_rel 0.05) stay finite.
    a_first = t_a <= t_b
    return np.where(a_first, c * (t_a / t_b) ** g_b / t_b, c * (t_b / t_a) ** g_a / t_a)


def coefficients(snap_images, snap_sigma, target_images: float, target_sigma: float) -> np.ndarray:
    """Weights of the snapshots (taken at snap_images with widths snap_sigma) whose combination best matches the
    target profile in L2, normalised to sum to one (a mean of weight vectors)."""
    t = np.asarray(snap_images, dtype=np.float64)
    g = np.array([exponent(s) for s in np.broadcast_to(snap_sigma, t.shape)])
    if not (t > 0).all() or len(set(zip(t.tolist(), g.tolist()))) < len(t):
        raise ValueError("snapshots must be taken at positive image counts, each (images, sigma_rel) once")
    gram = overlap(t[:, None], g[:, None], t[None, :], g[None, :])
    rhs = overlap(t, g, float(target_images), exponent(target_sigma))
    x = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return x / x.sum()


class PowerEMA:
    """Power-function EMAs of a set of parameters, one per sigma_rel, updated after every optimizer step."""

    def __init__(self, params, sigma_rels=(0.05, 0.10)):
        self.params = list(params)
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.averages = [[p.detach().clone().float() for p in self.params] for _ in self.sigma_rels]
        for s in self.sigma_rels:
            exponent(s)  # ValueError for a width no power function has

    @torch.no_grad()
    def update(self, images: int, batch: int) -> None:
        """Fold in the current parameters after the step that reached `images` images."""
        for s, avg in zip(self.sigma_rels, self.averages):
            b = beta(s, images, batch)
            for a, p in zip(avg, self.params):
                a.lerp_(p.detach().float(), 1.0 - b)

    def state(self, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """{f"{sigma_rel:.3f}": {name: tensor}}: what a snapshot stores (and a checkpoint, to resume)."""
        return {f"{s:.3f}": {n: a.clone() for n, a in zip(names, avg)} for s, avg in zip(self.sigma_rels, self.averages)}

    def load(self, state: dict[str, dict[str, torch.Tensor]], names: list[str]) -> None:
        for s, avg in zip(self.sigma_rels, self.averages):
            for a, n in zip(avg, names):
                a.copy_(state[f"{s:.3f}"][n])


def combine(tensors, weights) -> torch.Tensor:
    """sum_i weights[i] tensors[i] in float64, returned as float32; `tensors` may be a generator, so that only one
    snapshot's tensor is in memory at a time (the sum adds them in order, as Python's sum would)."""
    acc = None
    for w, t in zip(weights, tensors):
        term = float(w) * t.double()
        acc = term if acc is None else acc + term
    return acc.float()


def reconstruct_tensors(snapshots: list[tuple[int, float, "Mapping[str, torch.Tensor]"]], target_images: int,
                        target_sigma: float):
    """(name, tensor) pairs of a power-function EMA of width target_sigma at target_images, one parameter tensor at
    a time, from snapshots (images, sigma_rel, name -> tensor) taken at or before target_images. With lazy
    snapshots (load_snapshots) a tensor is read from each snapshot file only when it is combined: memory is one
    tensor and its sum however many snapshots there are (at width 768, 32 snapshots of 5B fp32 parameters are
    0.6 TB). Bad input is refused here, before any tensor is read."""
    used = [s for s in snapshots if s[0] <= target_images]
    if not used:
        raise ValueError(f"no snapshot at or before {target_images} images: reconstruct at a later budget")
    x = coefficients([s[0] for s in used], [s[1] for s in used], target_images, target_sigma)
    return ((name, combine((s[2][name] for s in used), x)) for name in used[0][2])


def reconstruct(snapshots: list[tuple[int, float, "Mapping[str, torch.Tensor]"]], target_images: int,
                target_sigma: float) -> dict[str, torch.Tensor]:
    """The weights of a power-function EMA of width target_sigma at target_images, all in one dict (a small model;
    reconstruct_checkpoint streams instead)."""
    return dict(reconstruct_tensors(snapshots, target_images, target_sigma))


SNAPSHOTS = "phema"  # a training run's snapshot folder (RUN_DIR/train/wW-sS/phema/)
STATE_FILE = "phema.safetensors"  # the profiles' current state inside each checkpoint (to resume)


def pack(ema: PowerEMA, names: list[str]) -> dict[str, torch.Tensor]:
    """One flat dict for safetensors: f"{sigma_rel:.3f}/{name}" -> tensor."""
    return {f"{s}/{n}": t.contiguous() for s, d in ema.state(names).items() for n, t in d.items()}


def unpack(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        s, name = key.split("/", 1)
        out.setdefault(s, {})[name] = t
    return out


def snapshot_path(size_dir, images: int, part: str = ""):
    """A snapshot file: one per snapshot point, or one per rank (part "-rank0of8") when the ranks share the work."""
    from pathlib import Path

    return Path(size_dir) / SNAPSHOTS / f"{int(images):012d}{part}.safetensors"


class LazyState(Mapping):
    """A snapshot's state dict whose tensors stay on disk: name -> tensor, read on access from whichever rank's file
    holds it (safetensors' safe_open reads that one tensor). `files` holds each file open once, shared by every
    snapshot of a run: opening a file per tensor read (its header parsed each time) cost ~30 s per reconstruction
    of the tiny ladder's 300 tensors x 32 snapshots."""

    def __init__(self, files: dict):
        self.files = files  # path -> an open safe_open handle
        self.where: dict[str, tuple[str, str]] = {}  # name -> (file, key in it)

    def __getitem__(self, name: str) -> torch.Tensor:
        path, key = self.where[name]
        return self.files[path].get_tensor(key)

    def __iter__(self):
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)


def load_snapshots(size_dir) -> list[tuple[int, float, LazyState]]:
    """Every snapshot of a training run: (images, sigma_rel, state dict), in order; the tensors are read only when
    used (each file's header is read here, the file kept open, memory-mapped, not loaded)."""
    from pathlib import Path

    from safetensors import safe_open

    merged: dict[tuple[int, float], LazyState] = {}
    files: dict = {}
    for path in sorted((Path(size_dir) / SNAPSHOTS).glob("*.safetensors")):
        images = int(path.stem.split("-")[0])  # NNN or NNN-rankRofW: each rank's share of the tensors
        files[str(path)] = f = safe_open(str(path), framework="pt")
        for key in f.keys():
            s, name = key.split("/", 1)
            merged.setdefault((images, float(s)), LazyState(files)).where[name] = (str(path), key)
    return [(i, s, d) for (i, s), d in sorted(merged.items())]


# safetensors' dtype names (its format spec); a tensor's bytes are written as they lie in memory (little-endian).
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_TORCH = {v: k for k, v in _DTYPES.items()}


def write_streaming(path, specs: dict[str, tuple[torch.dtype, list[int]]], tensors) -> None:
    """Write a safetensors file one tensor at a time: specs (name -> (dtype, shape)) fix the header, then
    `tensors` yields (name, tensor) in the order of specs. safetensors' own writer needs every tensor at once."""
    import json
    import struct

    header, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        size = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the header padded to 8 bytes, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for (name, t), want in zip(tensors, specs):
            dtype, shape = specs[want]
            if name != want or t.dtype != dtype or list(t.shape) != list(shape):
                raise RuntimeError(f"write_streaming: got {name} {t.dtype} {list(t.shape)}, expected {want} "
                                   f"{dtype} {list(shape)}")
            f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def reconstruct_checkpoint(size_dir, sigma_rel: float, images: int | None = None):
    """An evaluable checkpoint folder of a training run's weights under a post-hoc EMA of width sigma_rel at a
    milestone (default: the last): SIZE_DIR/phema/sigma-S/milestone-N/, its ema.safetensors the reconstruction
    (buffers from the milestone), loadable by study.weights.load_unet. Rerunning returns the existing folder."""
    import itertools
    import json
    from pathlib import Path

    from safetensors import safe_open

    from study.atomic import write_json
    from study.weights import FILES, STATE, manifest, verify

    size_dir = Path(size_dir)
    index = size_dir / "milestones.json"
    milestones = json.loads(index.read_text()) if index.is_file() else []
    if not milestones:
        raise ValueError(f"{size_dir}: no milestones.json: pass a training run folder (RUN_DIR/train/wW-sS)")
    row = milestones[-1] if images is None else next((m for m in milestones if m["train_images"] == images), None)
    if row is None:
        raise ValueError(f"{size_dir} has no milestone at {images} images: one of "
                         f"{[m['train_images'] for m in milestones]}")
    source = size_dir / row["path"]
    out = size_dir / SNAPSHOTS / f"sigma-{sigma_rel:.3f}" / source.name
    if (out / STATE).is_file():
        return out
    snaps = load_snapshots(size_dir)
    if not snaps:
        raise ValueError(f"{size_dir}: no post-hoc EMA snapshots (train.phema_snapshots was 0 when it trained)")
    state = verify(source, ["unet.json", "ema.safetensors"])
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.mkdir(parents=True, exist_ok=True)
    # One tensor at a time: each reconstructed parameter from every snapshot, then the milestone's buffers as they
    # are (what the milestone's weights hold beyond the parameters the snapshots track).
    pairs = reconstruct_tensors(snaps, int(row["train_images"]), sigma_rel)  # checks the snapshots first
    recon = list(next(s for s in snaps if s[0] <= int(row["train_images"]))[2])
    with safe_open(str(source / "ema.safetensors"), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        dtypes = {k: _TORCH[f.get_slice(k).get_dtype()] for k in f.keys()}
        specs = {k: (torch.float32, shapes[k] if k in shapes else list(snaps[0][2][k].shape)) for k in recon}
        specs.update({k: (dtypes[k], shapes[k]) for k in shapes if k not in specs})
        buffers = ((k, f.get_tensor(k)) for k in specs if k not in recon)
        write_streaming(tmp / "ema.safetensors", specs,
                        itertools.chain(pairs, buffers))
    (tmp / "unet.json").write_text((source / "unet.json").read_text())
    write_json(tmp / STATE, {"train_images": state["train_images"], "phema_sigma_rel": sigma_rel,
                             "source": str(source), FILES: manifest(tmp)})
    tmp.replace(out)
    return out
