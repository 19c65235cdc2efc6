"""The DreamBooth subject: a few instance images, an identifier prompt, a class prompt, novel-context prompts.

Four sources, one `Subject`:
- "digits" (embedded, offline): mirror-written digits. A handful of scikit-learn threes, flipped left to right,
  are the instances of "a handwritten digit three in sks style"; the novel contexts are the other asymmetric
  digits "in sks style". No training digit is mirrored, so the base models have never seen the style, and the
  style is a known pixel transform, so the true subject in every novel context exists (the held-out digits of
  that class, mirrored): fidelity can be measured against it, not only against the instances.
- "photos" (embedded, offline; data.name=photos): the same design on the photograph patches, with the photographic
  negative as the style (the patches' rotations and flips are training augmentations, so a mirror is no new
  style there): a handful of inverted patches of one photograph are "a patch of the cat photograph in sks style",
  the novel contexts the other photographs "in sks style", the true subject in each their held-out patches
  inverted.
- "google": Google's DreamBooth data set layout (dataset/<subject>/NN.jpg and dataset/prompts_and_classes.txt,
  github.com/google/dreambooth): the subject's class noun and the paper's prompt lists come from that file.
- "folder": any folder of instance images plus a class noun (dreambooth.class_noun).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from study.data import DIGIT_NAMES, PHOTO_NAMES, PHOTO_TEMPLATES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Digits whose mirror image is itself (0, 1, 8 at 8x8) would show no style: they are never contexts.
SYMMETRIC_DIGITS = (0, 1, 8)
# Live subjects get the paper's "live" prompt list (outfits, hats); every other class its "object" list.
LIVE_CLASSES = ("dog", "cat")
# A few of the paper's object prompts, for a plain folder without a prompts file (prompts_and_classes.txt).
DEFAULT_PROMPTS = ("a {0} {1} in the jungle", "a {0} {1} in the snow", "a {0} {1} on the beach",
                   "a {0} {1} with a city in the background", "a red {0} {1}", "a shiny {0} {1}")


@dataclass
class Subject:
    """One subject: instance images (uint8 N x C x H x W) and the prompts DreamBooth trains and evaluates on."""

    name: str
    instance_images: np.ndarray
    instance_prompt: str  # the identifier prompt of every instance image ("a handwritten digit three in sks style")
    class_prompt: str  # the same without the identifier: the prior the class images preserve
    eval_prompts: list[str]  # identifier prompts, the instance one first, then the novel contexts
    # Embedded data only: the digit each eval prompt asks for, the class prompt's digit, and per digit the
    # held-out real digits in the subject's style (the true subject in that context) and without it.
    eval_labels: list[int] | None = None
    class_label: int | None = None
    styled_references: dict[int, np.ndarray] = field(default_factory=dict)
    plain_references: dict[int, np.ndarray] = field(default_factory=dict)
    style: Callable | None = None  # embedded data: the style's pixel transform (its own inverse)

    def __post_init__(self):
        if not 1 <= len(self.instance_images) <= 64:
            raise ValueError(f"subject {self.name!r} has {len(self.instance_images)} instance images: DreamBooth "
                             f"uses a handful (3-6); give between 1 and 64")
        if self.eval_labels is not None and len(self.eval_labels) != len(self.eval_prompts):
            raise ValueError(f"{len(self.eval_labels)} labels for {len(self.eval_prompts)} evaluation prompts")


def mirror(images: np.ndarray) -> np.ndarray:
    """The embedded subject's style: each image flipped left to right (mirror writing)."""
    return np.ascontiguousarray(np.asarray(images)[..., ::-1])


def negative(images: np.ndarray) -> np.ndarray:
    """The photographs' subject style: the photographic negative of each image in [0, 255] (uint8 stays uint8)."""
    a = np.asarray(images)
    return (255 - a.astype(np.int16)).astype(np.uint8) if a.dtype == np.uint8 else 255.0 - a


def digit_prompt(digit: int, identifier: str | None = None) -> str:
    """'a handwritten digit three' (a training caption template), or '... in sks style' with an identifier."""
    base = f"a handwritten digit {DIGIT_NAMES[digit]}"
    return f"{base} in {identifier} style" if identifier else base


def digits_subject(data_cfg, db) -> Subject:
    """The embedded subject: `db.num_instances` mirrored training digits of `db.digit`, and the other contexts."""
    from study.data import load_digits_splits

    train, held = load_digits_splits(data_cfg)
    if db.digit in SYMMETRIC_DIGITS or not 0 <= db.digit <= 9:
        raise ValueError(f"dreambooth.digit={db.digit}: choose an asymmetric digit (not {SYMMETRIC_DIGITS}), "
                         f"whose mirror image differs from it")
    contexts = [d for d in range(10) if d not in SYMMETRIC_DIGITS and d != db.digit][: db.num_contexts]
    # the base models saw these digits, never mirrored
    return _styled_subject(f"mirror-{DIGIT_NAMES[db.digit]}", train, held, db.digit, contexts, digit_prompt, mirror,
                           db)


def _styled_subject(name: str, train, held, label: int, contexts: list[int], prompt: Callable, style: Callable,
                    db) -> Subject:
    """An embedded subject: `db.num_instances` training images of class `label` (a fixed draw by `db.seed`) in the
    style the base never saw, the contexts' classes "in sks style", their held-out images plain and styled."""
    pool = np.flatnonzero(train.labels == label)
    pick = np.sort(np.random.default_rng(db.seed).choice(pool, size=db.num_instances, replace=False))
    labels = [label, *contexts]
    refs = {k: np.asarray(held.images[held.labels == k]) for k in labels}
    return Subject(name=name, instance_images=style(train.images[pick]),
                   instance_prompt=prompt(label, db.identifier), class_prompt=prompt(label),
                   eval_prompts=[prompt(k, db.identifier) for k in labels], eval_labels=labels,
                   class_label=label, styled_references={k: style(r) for k, r in refs.items()},
                   plain_references=refs, style=style)


def photo_prompt(label: int, identifier: str | None = None) -> str:
    """'a patch of the cat photograph' (a training caption template), or '... in sks style' with an identifier."""
    base = PHOTO_TEMPLATES[0].format(name=list(PHOTO_NAMES.values())[label])
    return f"{base} in {identifier} style" if identifier else base


def photos_subject(data_cfg, db) -> Subject:
    """The embedded photographs' subject: `db.num_instances` inverted training patches of `db.photo`, and the other
    photographs as contexts."""
    from study.data import load_photo_splits

    names = list(PHOTO_NAMES.values())
    if db.photo not in names:
        raise ValueError(f"dreambooth.photo={db.photo!r}: choose one of {', '.join(names)}")
    train, held = load_photo_splits(data_cfg)
    label = names.index(db.photo)
    contexts = [k for k in range(len(names)) if k != label][: db.num_contexts]
    # the base models saw these patches, never inverted
    return _styled_subject(f"negative-{db.photo.replace(' ', '-')}", train, held, label, contexts, photo_prompt,
                           negative, db)


def read_prompts_and_classes(path: str | Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Google's prompts_and_classes.txt: ({subject: class noun}, {"object"|"live": prompt templates})."""
    path = Path(path)
    text = path.read_text()
    classes = dict(re.findall(r"^([\w-]+),([^\n,]+)$", text.split("Prompts")[0], flags=re.M))
    classes.pop("subject_name", None)  # the header row
    lists = {}
    for kind, block in (("object", "Object Prompts"), ("live", "Live Subject Prompts")):
        part = text.split(block, 1)[1] if block in text else ""
        part = part.split("]", 1)[0]
        # Each line is "'a {0} {1} in the jungle'.format(unique_token, class_token),": keep the template.
        lists[kind] = re.findall(r"'([^']*\{0\}[^']*)'\.format", part)
    if not classes or not lists["object"]:
        raise ValueError(f"{path}: not Google's DreamBooth prompts_and_classes.txt (expected a 'subject_name,class' "
                         f"table and an 'Object Prompts' list of '...'.format(unique_token, class_token) lines)")
    return classes, lists


def _load_images(folder: Path, resolution: int) -> np.ndarray:
    from study.data import _load_image  # the data sets' one resize-and-centre-crop

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no instance images ({', '.join(IMAGE_SUFFIXES)}): put the subject's 3-6 "
                         f"photos there")
    return np.stack([_load_image(p, resolution) for p in files])


def folder_subject(folder: str | Path, class_noun: str, identifier: str, resolution: int,
                   templates=DEFAULT_PROMPTS, max_prompts: int = 0) -> Subject:
    """Any folder of instance images plus a class noun: 'a photo of sks dog' / 'a photo of dog'."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"dreambooth.root={folder}: not a folder of instance images")
    if not class_noun:
        raise ValueError("dreambooth.class_noun is empty: name the subject's class (e.g. dog), as DreamBooth's "
                         "class prompt 'a photo of dog' needs it")
    prompts = [f"a photo of {identifier} {class_noun}",
               *(t.format(identifier, class_noun) for t in templates)]
    if max_prompts:
        prompts = prompts[:max_prompts]
    return Subject(name=folder.name, instance_images=_load_images(folder, resolution),
                   instance_prompt=prompts[0], class_prompt=f"a photo of {class_noun}", eval_prompts=prompts)


def google_subject(root: str | Path, subject: str, identifier: str, resolution: int, max_prompts: int = 0) -> Subject:
    """One subject of Google's DreamBooth data set (root = its dataset/ folder)."""
    root = Path(root)
    table = root / "prompts_and_classes.txt"
    if not table.exists():
        raise ValueError(f"{table} not found: dreambooth.root must be the dataset/ folder of github.com/google/"
                         f"dreambooth (one folder per subject and prompts_and_classes.txt)")
    classes, lists = read_prompts_and_classes(table)
    if subject not in classes:
        raise ValueError(f"dreambooth.subject={subject!r} is not in {table}: one of {', '.join(sorted(classes))}")
    noun = classes[subject].strip()
    templates = lists["live" if noun in LIVE_CLASSES and lists["live"] else "object"]
    return folder_subject(root / subject, noun, identifier, resolution, templates, max_prompts)


def load_subject(cfg) -> Subject:
    """The configured subject (cfg.dreambooth.data: digits | photos | google | folder)."""
    db = cfg.dreambooth
    if db.data == "digits":
        return digits_subject(cfg.data, db)
    if db.data == "photos":
        return photos_subject(cfg.data, db)
    if db.data == "google":
        return google_subject(db.root, db.subject, db.identifier, cfg.data.resolution, db.max_prompts)
    return folder_subject(db.root, db.class_noun, db.identifier, cfg.data.resolution, max_prompts=db.max_prompts)
