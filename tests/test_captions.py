"""Captions stored as token ids (data.captions = tokens, paper.yaml) against hidden states (the embedded default):
the encoder's two halves give exactly its old output, the shards keep int32 ids and the same latents in the same
order, and training, the held-out loss and an inline training run read them through the frozen encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.config import load_config


def _digits(cache, captions: str):
    """The smoke config's digits with the identity latent space (no VAE to train), prepared under `cache`."""
    from study.prepare import prepare

    cfg = load_config("smoke", [f"cache_dir={cache}", "autoencoder.kind=identity", f"data.captions={captions}",
                                "train.loss_milestones=[]", "eval.heldout_samples=64"])
    return cfg, prepare(cfg, progress=False, evaluator=False)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    cache = tmp_path_factory.mktemp("captions")
    return {c: _digits(cache, c) for c in ("states", "tokens")}


@pytest.mark.parametrize("kind", ["minilm", "clip"])
def test_tokenize_then_encode_ids_is_the_encoders_own_output(kind, tmp_path):
    from study.text import load_text_encoder

    over = []
    if kind == "clip":
        from standins import sd_folder

        over = ["text_encoder.kind=clip", f"text_encoder.path={sd_folder(tmp_path / 'sd')}",
                "text_encoder.max_length=12"]
    enc = load_text_encoder(load_config("smoke", over).text_encoder)
    texts = ["a handwritten digit three", "", "seven, slanted, in thin strokes by a hurried hand, and far too long"]
    tok = enc.tokenizer(texts, padding="max_length", truncation=True, max_length=enc.max_length, return_tensors="pt")
    direct = enc.model(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))[0]
    ids = enc.tokenize(texts)
    assert ids.dtype == np.int32 and ids.shape == (3, enc.max_length)
    assert (ids[1, 2:] == -1).all() and (ids[2] >= 0).all()  # -1 exactly where the mask is 0 (the long one is full)
    assert torch.equal(enc.encode_ids(ids), direct) and torch.equal(enc.encode(texts), direct.float())
    alone = load_text_encoder(load_config("smoke", over).text_encoder, tokenizer_only=True)
    assert alone.model is None and np.array_equal(alone.tokenize(texts), ids)  # prepare's actors load only this


def test_token_shards_hold_ids_and_the_same_latents_in_the_same_order(both):
    from study.shards.format import ShardIndex
    from study.text import load_text_encoder

    (cfg, ps), (_, pt) = both["states"], both["tokens"]
    s, t = ShardIndex.load(ps.shards_dir, verify_hashes=True), ShardIndex.load(pt.shards_dir, verify_hashes=True)
    assert (s.captions, t.captions) == ("states", "tokens") and ps.dir != pt.dir  # a cache of its own
    assert s.context_shape == t.context_shape == (cfg.text_encoder.max_length, 384)
    assert [r["sha256"] for r in s.shards("train")] == [r["sha256"] for r in t.shards("train")]  # latents: same bytes
    for sh in t.shards("train") + t.shards("heldout"):
        ids = t.context(sh["name"])
        assert ids.dtype == np.int32 and ids.shape == (sh["n"], cfg.text_encoder.max_length)
        assert not t.paths(sh["name"])["context"].exists()  # no hidden states beside them
        assert t.meta(sh["name"]) == s.meta(sh["name"])
    name = t.shards("train")[0]["name"]
    states = load_text_encoder(cfg.text_encoder).encode_ids(t.context(name)[:50])
    np.testing.assert_allclose(states.numpy(), np.asarray(s.context(name)[:50], np.float32), atol=2e-3)  # fp16 rounding
    per_sample = lambda ix, kind: ix.paths(name)[kind].stat().st_size / ix.shards("train")[0]["n"]  # noqa: E731
    assert per_sample(t, "tokens") < 4 * cfg.text_encoder.max_length + 8 < per_sample(s, "context") / 10


def test_the_training_step_encodes_token_ids_at_the_training_precision(both):
    from trainers.recipes import RecipeContext, get_recipe

    batches = {}
    for c, (cfg, prep) in both.items():
        recipe = get_recipe("base")
        recipe.data(RecipeContext(cfg, 8, 0, prep.dir, torch.device("cpu")))
        assert (recipe.text is None) and (recipe.prepared.captions == c)  # loaded on first use, in the worker
        batches[c] = recipe.batch(40, 16, torch.device("cpu"))
        assert (recipe.text is not None) == (c == "tokens")
    a, b = batches["states"], batches["tokens"]
    assert torch.equal(a["latents"], b["latents"]) and b["context"].dtype == torch.float32
    torch.testing.assert_close(b["context"], a["context"], atol=2e-3, rtol=0)
    cfg, prep = both["tokens"]
    bf16 = get_recipe("base")
    bf16.data(RecipeContext(load_config("smoke", [f"cache_dir={cfg.cache_dir}", "autoencoder.kind=identity",
                                                  "data.captions=tokens", "train.precision=bf16"]),
                            8, 0, prep.dir, torch.device("cpu")))
    bf16.batch(40, 16, torch.device("cpu"))
    assert next(bf16.text.model.parameters()).dtype == torch.bfloat16  # the frozen encoder at the step's precision


def test_the_heldout_loss_reads_token_ids(both):
    from study.heldout import HeldoutScorer
    from study.ladder import LADDERS, build_unet
    from trainers.data import PreparedData

    cfg, ps = both["states"]
    torch.manual_seed(0)
    unet = build_unet(LADDERS["tiny"], 8, PreparedData(ps.dir, 0).geometry)
    s = HeldoutScorer(cfg, ps.shards_dir)(unet)
    t = HeldoutScorer(both["tokens"][0], both["tokens"][1].shards_dir)(unet)
    assert s["heldout_loss"] == pytest.approx(t["heldout_loss"], rel=1e-3) and s["heldout_loss"] != t["heldout_loss"]


def test_an_inline_run_from_token_ids_trains_what_one_from_states_trains(both, tmp_path):
    """The same run (4 steps, width 8) from each storage: the same losses up to the fp16 rounding of stored states."""
    import json

    import trainers

    losses = {}
    for c, (cfg, prep) in both.items():
        run = load_config("smoke", [f"cache_dir={cfg.cache_dir}", "autoencoder.kind=identity", f"data.captions={c}",
                                    "train.total_images=128", "train.milestones=[1.0]", "train.loss_milestones=[]",
                                    "train.batch_size=32", "train.log_every_images=32", "tracking.wandb_mode=disabled",
                                    "sweep.max_failures=0"])
        summary = trainers.train_size(run, 8, 0, tmp_path / c, prep.dir, progress=False, inline=True)
        assert summary["train_images"] == 128
        rows = (trainers.run_dir_for(tmp_path / c, 8, 0) / "metrics.jsonl").read_text().splitlines()
        losses[c] = [json.loads(r)["loss"] for r in rows]
    assert len(losses["tokens"]) == 4 and losses["tokens"] != losses["states"]
    np.testing.assert_allclose(losses["tokens"], losses["states"], rtol=1e-3)
