"""Small local stand-ins for every file the paper's config (configs/paper.yaml) reads, built offline with the
real classes (diffusers, transformers, torchvision) and shrunk configs: an SD-style model folder (tokenizer,
CLIP text encoder, VAE), clean-fid's Inception file, a CLIP model, a DINO ViT, LPIPS' AlexNet backbone, an
img2dataset WebDataset set, COCO captions and val images, DIV2K and Google's DreamBooth data set layout.

`stage(root)` writes them all under root and returns the environment variables paper.yaml reads its paths from.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F


def byte_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary with no merges: every string tokenizes, offline."""
    from tokenizers import pre_tokenizers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[ch + suffix] = len(vocab)
    return vocab


def sd_folder(root: Path, latent_down: int = 2) -> Path:
    """An SD1.5-style folder: tokenizer/, text_encoder/ (CLIP, hidden 32) and vae/ (AutoencoderKL, /latent_down)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = byte_vocab()
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(root / "text_encoder")
    levels = int(np.log2(latent_down)) + 1
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16)[:levels],
                  layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=4, sample_size=16,
                  scaling_factor=0.18215).save_pretrained(root / "vae")
    return root


class _InceptionLayers(nn.Module):
    """Plays the role of clean-fid's Inception `layers`: 2048 features, and remembers the input shape."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 2048)
        self.register_buffer("last_shape", torch.zeros(4, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_shape.copy_(torch.tensor(x.shape))
        return self.proj(F.adaptive_avg_pool2d(x, 4).flatten(1))


class InceptionStandIn(nn.Module):
    """The call interface of clean-fid's inception-2015-12-05.pt (base(x, return_features) and .layers)."""

    def __init__(self, layers: nn.Module | None = None):
        super().__init__()
        self.layers = layers if layers is not None else _InceptionLayers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def inception_file(path: Path, layers=None) -> Path:
    """A TorchScript file with Inception's interface (the real one is a 100 MB download)."""
    torch.manual_seed(0)
    torch.jit.script(InceptionStandIn(layers() if layers else None)).save(str(path))
    return path


class _RowwiseLayers(nn.Module):
    """Inception-like `layers` whose features of an image do not depend on the batch around it (no matrix
    product, whose float32 rounding does): features then equal clean-fid's bit for bit, however batched."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(2048) / 2)
        self.shift = nn.Parameter(torch.randn(2048) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 4).flatten(1)  # 48 values per image
        return torch.tanh(pooled.repeat(1, 43)[:, :2048] * self.scale + self.shift)


def rowwise_inception_file(path: Path) -> Path:
    """An Inception-interface TorchScript file whose features are exact per image (see _RowwiseLayers)."""
    return inception_file(path, _RowwiseLayers)


def clip_folder(root: Path) -> Path:
    """A random CLIP (text and vision, hidden 32) with its processor, saved as a local model folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = byte_vocab()
    layers = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1, **layers),
                        vision_config=dict(image_size=32, patch_size=8, **layers), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=CLIPTokenizer(vocab=vocab, merges=[])).save_pretrained(root)
    return root


def dino_folder(root: Path) -> Path:
    """A random ViT (DINO's ViT-S/16 shrunk: 32x32 images, patch 16, hidden 32) with its image processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=2), add_pooling_layer=False).save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def lpips_backbone(path: Path) -> Path:
    """torchvision's AlexNet state dict, randomly initialised (LPIPS loads its features from this file)."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    torch.save(alexnet().state_dict(), path)
    return path


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _image(rng, size: int) -> np.ndarray:
    """A smooth random colour image (blobs, not white noise: it survives down- and upsampling)."""
    low = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC))


def webdataset(root: Path, n: int = 96, per_tar: int = 32, size: int = 20, seed: int = 0) -> Path:
    """img2dataset's WebDataset layout: NNNNN.tar with KEY.png (img2dataset writes .jpg; the reader takes
    either) and KEY.txt."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for t in range(0, n, per_tar):
        with tarfile.open(root / f"{t // per_tar:05d}.tar", "w") as tar:
            for i in range(t, min(t + per_tar, n)):
                for name, data in ((f"{i:09d}.png", _png(_image(rng, size))),
                                   (f"{i:09d}.txt", f"a photo of thing number {i % 7}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def coco(root: Path, n: int = 12, size: int = 24, seed: int = 1) -> tuple[Path, Path]:
    """COCO-2014 val's layout: annotations/captions_val2014.json and val2014/COCO_val2014_*.jpg."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "val2014").mkdir(exist_ok=True)
    for k in range(n):
        Image.fromarray(_image(rng, size)).save(root / "val2014" / f"COCO_val2014_{k:012d}.jpg", quality=95)
    captions = root / "annotations" / "captions_val2014.json"
    captions.write_text(json.dumps({"images": [{"id": k} for k in range(n)],
                                    "annotations": [{"id": k, "image_id": k, "caption": f"a red square {k}"}
                                                    for k in range(n)]}))
    return captions, root / "val2014"


def div2k(root: Path, n_train: int = 6, n_valid: int = 3, size: int = 64, seed: int = 2) -> Path:
    """DIV2K's layout: DIV2K_train_HR/0001.png ... and DIV2K_valid_HR/0801.png ... (LR made by the reader)."""
    rng = np.random.default_rng(seed)
    for split, first, n in (("train", 1, n_train), ("valid", 801, n_valid)):
        folder = root / f"DIV2K_{split}_HR"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(first, first + n):
            Image.fromarray(_image(rng, size)).save(folder / f"{k:04d}.png")
    return root


def dreambooth_dataset(root: Path, subject: str = "dog", n: int = 4, size: int = 24, seed: int = 3) -> Path:
    """Google's DreamBooth dataset/ layout: one folder per subject and prompts_and_classes.txt."""
    rng = np.random.default_rng(seed)
    (root / subject).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(_image(rng, size)).save(root / subject / f"{k:02d}.jpg", quality=95)
    (root / "prompts_and_classes.txt").write_text(
        f"subject_name,class\n{subject},dog\n\nPrompts\nObject Prompts\nprompt_list = [\n"
        "'a {0} {1} in the jungle'.format(unique_token, class_token),\n"
        "'a {0} {1} on the beach'.format(unique_token, class_token),\n]\n"
        "Live Subject Prompts\nprompt_list = [\n'a {0} {1} in the jungle'.format(unique_token, class_token),\n"
        "'a {0} {1} swimming'.format(unique_token, class_token),\n]\n")
    return root


def stage(root: Path) -> dict[str, str]:
    """Every stand-in under root, as a cluster's shared storage would hold them; the environment variables
    configs/paper.yaml reads its paths from."""
    root.mkdir(parents=True, exist_ok=True)
    sd = sd_folder(root / "models" / "stable-diffusion-v1-5")
    captions, val = coco(root / "data" / "coco")
    env = {
        "LDM_SHARED": str(root / "shared"),
        "LDM_DATA": str(webdataset(root / "data" / "laion")),
        "LDM_SD15": str(sd),
        "LDM_COCO_CAPTIONS": str(captions),
        "LDM_COCO_IMAGES": str(val),
        "LDM_INCEPTION": str(inception_file(root / "models" / "inception-2015-12-05.pt")),
        "LDM_CLIP": str(clip_folder(root / "models" / "clip-vit-large-patch14")),
        "LDM_DINO": str(dino_folder(root / "models" / "dino-vits16")),
        "LDM_LPIPS_ALEXNET": str(lpips_backbone(root / "models" / "alexnet.pth")),
        "LDM_DIV2K": str(div2k(root / "data" / "div2k")),
        "LDM_DREAMBOOTH": str(dreambooth_dataset(root / "data" / "dreambooth" / "dataset")),
    }
    return env
