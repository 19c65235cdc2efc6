"""The real-data path with small local stand-ins: an image folder with metadata.jsonl, an SD-style
model folder (CLIP text encoder + tokenizer, VAE), clean-fid's Inception file and COCO prompts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from standins import coco as coco_standin, inception_file, sd_folder as sd_folder_standin


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny SD-style folder: tokenizer/, text_encoder/ (CLIP, hidden 32) and vae/ (AutoencoderKL, /2)."""
    return sd_folder_standin(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def real_cfg(sd_folder, tmp_path_factory):
    from study.config import load_config

    root = tmp_path_factory.mktemp("real")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a photo of thing number {i % 5}"})
    (images / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    coco = root / "captions_val2014.json"
    coco.write_text(json.dumps({"images": [{"id": k} for k in range(6)],
                                "annotations": [{"id": k, "image_id": k, "caption": f"a red square {k}"}
                                                for k in range(6)]}))
    inception = inception_file(root / "inception-2015-12-05.pt")
    return load_config("paper", [
        f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}", "data.name=imagefolder", f"data.root={images}",
        "data.resolution=16", "data.max_bad_fraction=0.1", "data.prepare_actors=1", "data.prepare_gpus_per_actor=0",
        "data.eval_fraction=0.25", f"data.eval_captions={coco}", f"text_encoder.path={sd_folder}",
        "text_encoder.max_length=8", f"autoencoder.path={sd_folder}", f"eval.inception_path={inception}",
        "eval.clip_path=null", "eval.num_samples=6", "eval.batch_size=6", "model.widths=[8]", "model.ladder=tiny",
        "model.reference_width=8", "eval.gpus_per_eval=0", "eval.reference=heldout",
        # The base study's real-data path; the derived experiments' inputs are the paper rehearsal's.
        "distill.enabled=false", "superres.enabled=false", "dreambooth.enabled=false"])


def test_geometry_is_read_from_the_local_models(real_cfg):
    from study.ladder import geometry

    g = geometry(real_cfg)
    # The VAE halves 16x16 to 8x8 with 4 channels; the context width is the text encoder's hidden size.
    assert (g.in_channels, g.sample_size, g.context_dim, g.tokens) == (4, 8, 32, 8)


def test_clip_text_encoder_from_sd_folder(real_cfg):
    from study.text import load_text_encoder

    enc = load_text_encoder(real_cfg.text_encoder)
    out = enc.encode(["a photo", ""])
    assert out.shape == (2, 8, 32) and not torch.allclose(out[0], out[1])


def test_prepare_and_evaluate_on_real_data(real_cfg):
    from study.evaluator import Evaluator
    from study.ladder import LADDERS, build_unet, geometry
    from study.prepare import prepare

    prep = prepare(real_cfg, progress=False)
    meta = prep.meta
    assert meta["latent_shape"] == [4, 8, 8] and meta["context_shape"] == [8, 32] and not meta["has_labels"]
    assert json.loads((prep.dir / "eval_prompts.json").read_text())[0] == "a red square 0"  # COCO prompts
    ev = Evaluator(real_cfg, prep)
    assert ev.space.scaling_factor == pytest.approx(0.18215)
    torch.manual_seed(0)
    unet = build_unet(LADDERS["tiny"], 8, geometry(real_cfg))
    res = ev.evaluate(unet, "ddim", 2, 2.0)
    assert np.isfinite(res["fid"]) and res["num_samples"] == 6 and res["extractor"].startswith("cleanfid-")
    images, _ = ev.generate(unet, "ddim", 2, 2.0)
    assert images.shape == (6, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 255


def test_eval_reference_folder_is_the_fid_reference(real_cfg, tmp_path):
    """eval.reference names a folder (COCO val2014 in paper.yaml): its statistics, not the held-out split's,
    are what the evaluation compares against, with the training images' noise floor."""
    from cleanfid import fid as cleanfid

    from study.config import from_dict, to_dict
    from study.evaluator import Evaluator
    from study.ladder import LADDERS, build_unet, geometry
    from study.metrics import InceptionExtractor
    from study.prepare import prepare

    _, coco = coco_standin(tmp_path, n=10)
    raw = to_dict(real_cfg)
    raw["eval"].update(reference=str(coco), reference_shards=3, reference_workers=2)
    cfg = from_dict(raw)
    prep = prepare(cfg, progress=False)  # the shards are the held-out test's; only the reference is new
    ev = Evaluator(cfg, prep)
    ext = InceptionExtractor.from_file(cfg.eval.inception_path)
    feats = cleanfid.get_folder_features(str(coco), ext.embed, num_workers=0, device=torch.device("cpu"),
                                         verbose=False)
    assert ev.reference.num_images == 10 and ev.reference.floor_fid > 0
    # the stand-in's matrix product rounds float32 features differently by batch: float32 tolerance
    np.testing.assert_allclose(ev.reference.mu, feats.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev.reference.sigma, np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    res = ev.evaluate(build_unet(LADDERS["tiny"], 8, geometry(cfg)), "ddim", 2, 2.0)
    assert res["reference"] == ev.reference.key and np.isfinite(res["fid"])


def test_a_user_without_inception_can_prepare_and_train_and_evaluation_says_what_to_set(real_cfg, tmp_path,
                                                                                         monkeypatch, capsys):
    from cli import main as cli
    from study.config import from_dict, to_dict
    from study.paths import require_paths
    from study.prepare import prepare

    raw = to_dict(real_cfg)
    raw["eval"]["inception_path"] = None
    raw["cache_dir"], raw["runs_dir"] = str(tmp_path / "cache"), str(tmp_path / "runs")
    cfg = from_dict(raw)
    require_paths(cfg, evaluation=False)
    prep = prepare(cfg, progress=False, evaluator=False)  # shards, text and meta; no FID reference
    assert prep.meta["n_train"] > 0 and not prep.reference_path().exists()
    from study.config import ConfigError
    from trainers import train_size

    # The paper's 8 GPU workers on this machine's Ray (started by prepare above): refused at once, not a
    # run that waits forever for GPUs that never come.
    with pytest.raises(ConfigError, match="train.num_workers=8 needs"):
        train_size(cfg, 8, 0, tmp_path / "paper-runs", prep.dir, progress=False)
    cpu = {"total_images": 8, "batch_size": 4, "milestones": [1.0], "warmup_images": 0, "use_gpu": "false",
           "num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0}
    # Inline, as `study run` trains a one-worker run (the Ray Train launcher has its own tests).
    summary = train_size(cfg, 8, 0, tmp_path / "runs" / cfg.name, prep.dir, progress=False, train=cpu, inline=True)
    assert summary["train_images"] == 8
    # Evaluation needs the file: one line naming the key and where to get it, before any data is read.
    (tmp_path / "cfg.yaml").write_text(__import__("yaml").safe_dump(raw))
    monkeypatch.setattr("sys.argv", ["study", "prepare", str(tmp_path / "cfg.yaml")])
    capsys.readouterr()  # what training printed
    with pytest.raises(SystemExit) as out:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert out.value.code == 2 and len(err) == 1, err
    assert "eval.inception_path" in err[0] and "inception-2015-12-05.pt" in err[0]
    import ray

    ray.shutdown()  # the local Ray prepare started in this process
