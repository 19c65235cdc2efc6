"""`study prepare`: the cached artefacts every run reads, and their reuse."""

import json

import numpy as np

from study.ladder import geometry


def test_prepare_builds_the_contract(smoke_prepared):
    cfg, prep = smoke_prepared
    meta = prep.meta
    geom = geometry(cfg)
    from study.shards.format import ShardIndex

    shards = ShardIndex.load(prep.shards_dir, verify_hashes=True)  # the digits go through the shards too
    lat = np.concatenate([shards.latents(s["name"]) for s in shards.shards("train")])
    assert lat.shape == (meta["n_train"], geom.in_channels, geom.sample_size, geom.sample_size)
    assert lat.dtype == np.float16
    # Latents are scaled to unit variance by the factor measured on the data (SD's 0.18215 convention).
    assert 0.8 < float(np.asarray(lat, dtype=np.float32).std()) < 1.2
    context = np.concatenate([shards.context(s["name"]) for s in shards.shards("train")])
    assert shards.captions == cfg.data.captions == "states"  # smoke.yaml: hidden states (tokens: test_captions.py)
    assert context.shape == (meta["n_train"], cfg.text_encoder.max_length, 384) and context.dtype == np.float16
    assert shards.uncond().shape == prep.array("uncond").shape == (1, cfg.text_encoder.max_length, 384)
    assert (prep.autoencoder_dir / "config.json").exists()
    ref = json.loads(prep.reference_path().read_text())
    assert ref["floor_fid"] > 0 and ref["num_images"] == meta["n_held_out"]
    assert len(json.loads((prep.dir / "eval_prompts.json").read_text())) == len(prep.array("eval_index"))


def test_prepare_is_cached_and_keyed(smoke_prepared, monkeypatch):
    from study.config import load_config
    from study.prepare import prepare, prepared_paths

    cfg, prep = smoke_prepared
    import study.autoencoder as ae

    monkeypatch.setattr(ae, "train_small_vae", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert prepare(cfg, progress=False).dir == prep.dir  # reused, nothing recomputed
    other = load_config("smoke", [f"cache_dir={cfg.cache_dir}", "text_encoder.max_length=12"])
    assert prepared_paths(other).dir != prep.dir  # a different encoder setting is a different cache


def test_evaluator_scores_real_images_near_the_floor(smoke_prepared):
    import torch

    from study.datasets import load_splits
    from study.evaluator import Evaluator
    from study.metrics import evaluate_images

    cfg, prep = smoke_prepared
    ev = Evaluator(cfg, prep)
    train, _ = load_splits(cfg.data)
    real = torch.from_numpy(np.asarray(train.images[: cfg.eval.num_samples])).float()
    noise = torch.rand_like(real) * 255
    fid_real = evaluate_images(ev.extractor, real, ev.reference, bootstrap=0)["fid"]
    fid_noise = evaluate_images(ev.extractor, noise, ev.reference, bootstrap=0)["fid"]
    assert fid_real < 0.5 * fid_noise
    # Round trip through the latent space keeps images recognisable for the classifier.
    lat = ev.space.encode(real.to(torch.uint8))
    acc = (ev.classifier(ev.space.decode(lat)).argmax(1).numpy() == train.labels[: len(real)]).mean()
    assert acc > 0.5
