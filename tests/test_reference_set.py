"""FID reference statistics of a folder (or .tar shards) of real images, summed over Ray tasks: the same
numbers as clean-fid's own folder path, whatever the shards and workers; cached, resumed, checked up front."""

import functools
import io
import tarfile

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid
from PIL import Image

from standins import rowwise_inception_file

from study.metrics import INCEPTION_FILE, InceptionExtractor, evaluate_images
from study.metrics.reference_set import (Part, ReferenceSetError, accumulate, check_reference,
                                         compute_set_reference, list_reference)

N_IMAGES = 40
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return rowwise_inception_file(tmp_path_factory.mktemp("inception") / INCEPTION_FILE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 images of different sizes, formats and brightness, some in a subfolder, plus a file that is not one."""
    root = tmp_path_factory.mktemp("reference")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = rng.integers(12, 48, 2)
        image = np.clip(rng.integers(0, 256) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / ("sub" if i % 4 == 0 else "") / f"{i:03d}.{('png', 'jpg', 'webp')[i % 3]}")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def tars(folder, tmp_path_factory):
    """The same image files as WebDataset samples (KEY.EXT, no caption) in 3 .tar shards."""
    root = tmp_path_factory.mktemp("tars")
    files = sorted(p for p in folder.rglob("*") if p.suffix != ".txt" and p.is_file())
    for k in range(3):
        with tarfile.open(root / f"{k:05d}.tar", "w") as tar:
            for j, p in enumerate(files[k::3]):
                data = p.read_bytes()
                info = tarfile.TarInfo(f"{k}-{j:03d}{p.suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


def _maker(inception):
    return functools.partial(InceptionExtractor.from_file, str(inception))


def _clean_fid_stats(folder, inception):
    """clean-fid's own folder path with the same model: features, np.mean, np.cov (as its compute_fid)."""
    ext = InceptionExtractor.from_file(inception)
    feats = cleanfid.get_folder_features(str(folder), ext.embed, num_workers=0, batch_size=16, device=CPU,
                                         verbose=False)
    return feats, np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def _assert_clean_fid_stats(ref, feats, mu, sigma):
    assert ref.num_images == len(feats) == N_IMAGES
    top = float(np.abs(mu).max())
    np.testing.assert_allclose(ref.mu, feats.astype(np.float64).mean(axis=0), rtol=0, atol=1e-15 * top)
    # clean-fid's np.mean of float32 features is float32 (summed and rounded in float32); ours is float64
    np.testing.assert_allclose(ref.mu, mu, rtol=0, atol=1e-6 * top)
    # the sums of outer products lose the digits of the mean's square to cancellation: float64 rounding of
    # E[x x^T], not of the (smaller) covariance
    scale = float(np.abs(np.outer(ref.mu, ref.mu)).max() + np.abs(sigma).max())
    np.testing.assert_allclose(ref.sigma, sigma, rtol=0, atol=1e-13 * scale)
    assert np.abs(sigma).max() > 1e-3 * scale  # a covariance worth comparing, not one lost in the rounding
    np.testing.assert_array_equal(ref.feats, feats)  # the KID pool: the whole set (under KID_POOL), in order


@pytest.mark.parametrize("shards,workers", [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)])
def test_folder_statistics_equal_clean_fids_for_any_shards_and_workers(folder, inception, shards, workers,
                                                                      tmp_path, ray_local):
    parts = list_reference(str(folder))
    assert len(parts) == N_IMAGES and parts[0].key == "001.jpg" and "sub/000.png" in {p.key for p in parts}
    ref = compute_set_reference(parts, _maker(inception), "standin", tmp_path, {}, batch_size=7, shards=shards,
                                workers=workers)
    _assert_clean_fid_stats(ref, *_clean_fid_stats(folder, inception))


def test_tar_shards_give_the_folders_statistics(folder, tars, inception, tmp_path, ray_local):
    feats, mu, sigma = _clean_fid_stats(folder, inception)
    for reference in (str(tars), str(tars / "*.tar")):  # a folder of .tar, or a glob
        parts = list_reference(reference)
        assert [p.kind for p in parts] == ["tar"] * 3
        ref = compute_set_reference(parts, _maker(inception), "standin", tmp_path / "c", {}, batch_size=8, shards=2,
                                    workers=2)
        assert ref.num_images == N_IMAGES
        np.testing.assert_allclose(ref.mu, feats.astype(np.float64).mean(axis=0), rtol=1e-14, atol=0)
        np.testing.assert_allclose(ref.sigma, sigma, rtol=0, atol=1e-13 * float(np.abs(sigma).max() + 1))


def _refuse(*args, **kwargs):
    raise AssertionError("the cached statistics should have been loaded, not recomputed")


def test_statistics_are_cached_by_the_sets_identity(folder, inception, tmp_path, ray_local):
    parts = list_reference(str(folder))
    first = compute_set_reference(parts, _maker(inception), "standin", tmp_path, {}, shards=2, workers=2)
    again = compute_set_reference(list_reference(str(folder)), _refuse, "standin", tmp_path, {}, shards=3)
    assert again.key == first.key and np.array_equal(again.sigma, first.sigma)
    other = compute_set_reference(parts[:-1], _maker(inception), "standin", tmp_path, {})  # one file fewer
    assert other.key != first.key and other.num_images == N_IMAGES - 1


def test_a_killed_run_keeps_its_finished_shards(folder, inception, tmp_path, ray_local):
    parts = list_reference(str(folder))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = [*parts, Part("image", str(broken), "zzz.png", "0")]  # the last shard fails on it
    done = tmp_path / "shards"
    with pytest.raises(Exception, match="zzz.png cannot be read"):
        accumulate(bad, _maker(inception), done, batch_size=8, shards=3, workers=1)
    kept = sorted(done.glob("*.npz"))
    assert [p.name for p in kept] == ["shard-00000-of-00003.npz", "shard-00001-of-00003.npz"]
    stamps = [p.stat().st_mtime_ns for p in kept]
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(broken, format="PNG")  # fixed in place
    acc = accumulate(bad, _maker(inception), done, batch_size=8, shards=3, workers=1)
    assert [p.stat().st_mtime_ns for p in kept] == stamps  # not redone
    assert acc.sums.count == N_IMAGES + 1


def test_missing_or_empty_reference_is_one_line_naming_the_key(tmp_path):
    from study.config import ConfigError, load_config
    from study.paths import require_paths

    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "empty" / "deeper" / "readme.txt").write_text("no images")
    for path, why in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "no images")):
        cfg = load_config("tiny", [f"eval.reference={path}"])
        require_paths(cfg, evaluation=False)  # training does not read the reference
        with pytest.raises(ConfigError) as err:
            require_paths(cfg)
        lines = [line for line in str(err.value).splitlines() if "eval.reference" in line]
        assert len(lines) == 1 and lines[0].startswith(f"config key 'eval.reference' = {str(path)!r}: ")
        assert why in lines[0]
    with pytest.raises(ReferenceSetError, match="no images"):
        check_reference(str(tmp_path / "empty" / "*.tar"))
    require_paths(load_config("tiny", ["eval.reference=heldout"]))  # the default reads the data's own split


def test_fid_against_the_folder_equals_clean_fids_compute_fid(folder, inception, tmp_path, ray_local):
    ext = InceptionExtractor.from_file(inception)
    ref = compute_set_reference(list_reference(str(folder)), _maker(inception), ext.name, tmp_path, {}, shards=3,
                                workers=2)
    gen_images = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 255
    batches = iter(gen_images.split(8))
    ours = evaluate_images(ext, gen_images, ref, batch_size=8, bootstrap=0)
    theirs = cleanfid.compute_fid(gen=lambda z: next(batches), fdir2=str(folder), custom_feat_extractor=ext.embed,
                                  num_gen=24, batch_size=8, device=CPU, num_workers=0, verbose=False)
    assert ours["fid"] == pytest.approx(theirs, rel=1e-6) and ours["reference"] == ref.key
