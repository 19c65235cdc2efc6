"""4x super-resolution data: (HR, LR) pairs from the photographs inside scikit-image's wheel (embedded,
offline), the DIV2K layout, or any image folder. Held out by source image; training crops are a pure
function of their position in the sample stream, so a resumed run draws the same crops."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SCALE = 4  # the task is 4x (the paper's DIV2K x4); one constant, not a setting

# Photographs that ship inside scikit-image's wheel (skimage/data/; nothing is fetched). Synthetic images
# (color, logo, chessboards), silhouettes (horse) and motorcycle_right (the left view's twin, which would
# leak a held-out scene into training) are left out.
EMBEDDED_TRAIN = ("astronaut.png", "brick.png", "cell.png", "chelsea.png", "coins.png", "grass.png",
                  "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "page.png", "retina.jpg",
                  "rocket.jpg", "text.png")
# Held out by photograph: a scene, an object, a texture and a grey astronomical image.
EMBEDDED_EVAL = ("camera.png", "coffee.png", "gravel.png", "moon.png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CROPS_PER_IMAGE = 8  # consecutive stream positions share a source image: a real folder is read 8x less often


def downsample(hr: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Bicubic 1/scale downsampling with antialiasing (MATLAB imresize's, as DIV2K's X4), rounded to uint8 levels."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by the scale {scale}")
    lr = F.interpolate(hr.float(), size=(h // scale, w // scale), mode="bicubic", antialias=True,
                       align_corners=False)
    return lr.round().clamp(0, 255)


def upsample(lr: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling to size x size in [0, 255]: the baseline every SR figure is compared with."""
    return F.interpolate(lr.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255)


def _read(path: Path, channels: int, shrink: int = 1) -> np.ndarray:
    """An image file as uint8 C x H x W (grey or RGB), optionally shrunk by an integer factor first."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if shrink > 1:
            im = im.resize((im.width // shrink, im.height // shrink), Image.BICUBIC, reducing_gap=None)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def embedded_dir() -> Path:
    """skimage/data/ inside the installed wheel."""
    import skimage

    return Path(skimage.__file__).parent / "data"


class PairSource:
    """(HR, LR) pairs: random training crops by stream position, a fixed held-out evaluation set."""

    def __init__(self, train: list, valid: list, hr_size: int, channels: int, seed: int, num_eval: int,
                 loader, train_lr: list | None = None, valid_lr: list | None = None, name: str = ""):
        self.train, self.valid, self.train_lr, self.valid_lr = train, valid, train_lr, valid_lr
        self.hr_size, self.channels, self.seed, self.num_eval = hr_size, channels, int(seed), num_eval
        self._load, self.name = loader, name
        self._block: tuple[int, dict] | None = None

    def _hr(self, path: Path) -> np.ndarray:
        img = self._load(path)
        if min(img.shape[-2:]) < self.hr_size:
            raise ValueError(f"{path} is {img.shape[-1]}x{img.shape[-2]} (after any superres.photo_shrink), "
                             f"smaller than superres.hr_size={self.hr_size}: remove it or lower hr_size")
        return img

    # -- training: crops drawn by position ------------------------------------------------------------
    _BLOCK = 1024

    def _draws(self, block: int) -> dict:
        """The crop parameters of stream positions [block * 1024, (block + 1) * 1024), keyed by (seed, block)."""
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([self.seed, 0x5352, block])
            n, groups = self._BLOCK, self._BLOCK // CROPS_PER_IMAGE
            image = np.repeat(rng.integers(0, len(self.train), groups), CROPS_PER_IMAGE)
            self._block = (block, {"image": image, "fy": rng.random(n), "fx": rng.random(n),
                                   "flip": rng.integers(0, 8, n)})
        return self._block[1]

    def train_labels(self, start: int, count: int) -> np.ndarray:
        """Which training image each stream position's crop comes from (the domain network's labels)."""
        return np.array([self._draws(p // self._BLOCK)["image"][p % self._BLOCK] for p in range(start, start + count)])

    def train_pairs(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """HR [count, C, S, S] and LR [count, C, S/4, S/4] (float, 0..255) at stream positions [start, start+count)."""
        s, hr, lr = self.hr_size, [], []
        for pos in range(start, start + count):
            d = self._draws(pos // self._BLOCK)
            i = pos % self._BLOCK
            k = int(d["image"][i])
            img = self._hr(self.train[k])
            # crop corners on the LR grid (multiples of 4), so HR and a given LR file stay aligned
            h, w = img.shape[-2] // SCALE, img.shape[-1] // SCALE
            y = int(d["fy"][i] * (h - s // SCALE + 1)) * SCALE
            x = int(d["fx"][i] * (w - s // SCALE + 1)) * SCALE
            hr_crop = torch.from_numpy(np.ascontiguousarray(img[:, y:y + s, x:x + s])).float()
            # one of the 8 flips/rotations (the dihedral group): photographs have no preferred orientation
            hr.append(_dihedral(hr_crop, int(d["flip"][i])))
            if self.train_lr is not None:
                low = self._load(self.train_lr[k])
                lr_crop = torch.from_numpy(np.ascontiguousarray(
                    low[:, y // SCALE:(y + s) // SCALE, x // SCALE:(x + s) // SCALE])).float()
                lr.append(_dihedral(lr_crop, int(d["flip"][i])))
        hr_t = torch.stack(hr)
        # without LR files, one batched downsampling (it commutes with the flips on the aligned square grid)
        return hr_t, torch.stack(lr) if lr else downsample(hr_t)

    # -- evaluation: a fixed set of held-out patches --------------------------------------------------
    def eval_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """HR and LR of the held-out set: a grid of crops over the held-out images, num_eval drawn by seed."""
        s, hr, lr = self.hr_size, [], []
        for k, path in enumerate(self.valid):
            img = self._hr(path)
            low = self._load(self.valid_lr[k]) if self.valid_lr is not None else None
            for y in range(0, img.shape[-2] - s + 1, s):
                for x in range(0, img.shape[-1] - s + 1, s):
                    hr.append(torch.from_numpy(np.ascontiguousarray(img[:, y:y + s, x:x + s])).float())
                    if low is not None:
                        lr.append(torch.from_numpy(np.ascontiguousarray(
                            low[:, y // SCALE:(y + s) // SCALE, x // SCALE:(x + s) // SCALE])).float())
        if not hr:
            raise ValueError(f"{self.name}: no held-out image is at least {s}x{s}: lower superres.hr_size")
        hr_t = torch.stack(hr)
        lr_t = torch.stack(lr) if lr else downsample(hr_t)
        pick = np.sort(np.random.default_rng([self.seed, 0xE7A1]).permutation(len(hr_t))[: self.num_eval])
        return hr_t[pick], lr_t[pick]


def _dihedral(x: torch.Tensor, f: int) -> torch.Tensor:
    """Element f (0..7) of the square's symmetry group: rotation by f % 4 quarter turns, then a flip if f >= 4."""
    x = torch.rot90(x, f % 4, (-2, -1))
    return x.flip(-1) if f >= 4 else x


def _find(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _lr_name(hr: Path) -> str:
    return f"{hr.stem}x{SCALE}{hr.suffix}"  # DIV2K: 0801.png -> 0801x4.png


def _div2k_split(root: Path, split: str) -> tuple[list[Path], list[Path] | None]:
    hr_dir = root / f"DIV2K_{split}_HR"
    hr = _find(hr_dir)
    if not hr:
        raise ValueError(f"{hr_dir} holds no images: the DIV2K layout needs DIV2K_train_HR/ and DIV2K_valid_HR/")
    lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{SCALE}"
    if not lr_dir.is_dir():
        return hr, None  # no LR files: bicubic downsampling of each HR crop
    lr = [lr_dir / _lr_name(p) for p in hr]
    missing = [p.name for p in lr if not p.exists()]
    if missing:
        raise ValueError(f"{lr_dir} lacks {missing[0]} (and {len(missing) - 1} more): complete it or remove the "
                         f"folder to downsample the HR images instead")
    return hr, lr


def load_pair_source(kind: str, root: str | None, hr_size: int, channels: int, seed: int, num_eval: int,
                     photo_shrink: int = 1, eval_fraction: float = 0.1) -> PairSource:
    """The (HR, LR) source of a super-resolution study: "embedded", "div2k" or "imagefolder"."""
    if hr_size <= 0 or hr_size % SCALE:
        raise ValueError(f"superres.hr_size={hr_size}: expected a positive multiple of {SCALE}")

    @lru_cache(maxsize=64)  # the embedded set is ~17 small images; a real folder keeps the newest 64 decoded
    def loader(path: Path) -> np.ndarray:
        return _read(path, channels, photo_shrink)

    if kind == "embedded":
        base = embedded_dir()
        train, valid = [base / n for n in EMBEDDED_TRAIN], [base / n for n in EMBEDDED_EVAL]
        return PairSource(train, valid, hr_size, channels, seed, num_eval, loader, name="skimage photographs")
    if root is None:
        raise ValueError(f"superres.data={kind!r} needs superres.root (the data folder)")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ValueError(f"superres.root={folder} is not a folder")
    if kind == "div2k":
        if photo_shrink != 1:
            raise ValueError("superres.photo_shrink must be 1 for DIV2K (its LR files match the full-size HR)")
        train, train_lr = _div2k_split(folder, "train")
        valid, valid_lr = _div2k_split(folder, "valid")
        return PairSource(train, valid, hr_size, channels, seed, num_eval, loader, train_lr, valid_lr, name="DIV2K")
    if kind == "imagefolder":
        files = _find(folder)
        if len(files) < 2:
            raise ValueError(f"{folder} holds {len(files)} images: an image folder needs at least 2 "
                             f"(one to train on, one held out)")
        order = np.random.default_rng(seed).permutation(len(files))
        n_held = max(1, int(round(eval_fraction * len(files))))
        valid = [files[i] for i in sorted(order[:n_held])]
        train = [files[i] for i in sorted(order[n_held:])]
        return PairSource(train, valid, hr_size, channels, seed, num_eval, loader, name=str(folder))
    raise ValueError(f"superres.data={kind!r}: expected 'embedded', 'div2k' or 'imagefolder'")
