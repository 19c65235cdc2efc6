"""Evaluate one checkpoint at one (sampler, steps, guidance): generate, decode, FID/KID, alignment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from study.config import StudyConfig
from study.prepare import Prepared
from study.runtime import device as runtime_device


class Evaluator:
    """Everything evaluation needs, loaded once per process from the prepared cache."""

    def __init__(self, cfg: StudyConfig, prep: Prepared, device: torch.device | None = None):
        from study.autoencoder import load_latent_space
        from study.metrics import ClassifierExtractor, InceptionExtractor, load_classifier, load_reference

        self.cfg, self.prep = cfg, prep
        self.device = device or runtime_device(cfg.eval.gpus_per_eval)
        meta = prep.meta
        self.latent_shape = tuple(meta["latent_shape"])
        self.table = torch.from_numpy(np.asarray(prep.array("eval_table"), dtype=np.float32))
        self.index = torch.from_numpy(np.array(prep.array("eval_index")))
        self.uncond = torch.from_numpy(np.asarray(prep.array("uncond"), dtype=np.float32))
        self.labels = (torch.from_numpy(np.array(prep.array("eval_labels"))) if meta["has_labels"] else None)
        self.prompts = json.loads((prep.dir / "eval_prompts.json").read_text())
        self.space = load_latent_space(cfg.autoencoder, prep.autoencoder_dir).to(self.device)
        if not prep.reference_path().exists():  # prepared for training only (`study train`, --no-evaluator)
            from study.errors import UserError

            raise UserError(f"no FID reference in {prep.data_dir}: run `study prepare` with this config (it builds "
                            f"the evaluation features and reference, and needs eval.inception_path for real data)")
        ref_meta = json.loads(prep.reference_path().read_text())
        self.reference = load_reference(ref_meta["stats"])
        self.floor_fid = ref_meta.get("floor_fid")
        self.classifier = None
        if cfg.eval.feature_extractor == "classifier":
            self.classifier = load_classifier(prep.evaluator_dir, device=self.device)
            self.extractor = ClassifierExtractor(self.classifier)
        else:
            self.extractor = InceptionExtractor.from_file(cfg.eval.inception_path, device=self.device)
        self.clip = None
        if cfg.eval.clip_path:
            from study.metrics import ClipScorer

            self.clip = ClipScorer.from_pretrained(cfg.eval.clip_path, device=self.device)

    def heldout_loss(self, unet) -> dict:
        """The held-out denoising loss of a UNet (study.heldout.HeldoutScorer); {} when turned off or the prepared
        data keeps no held-out latents."""
        from study.heldout import HeldoutScorer

        if not hasattr(self, "_heldout"):
            self._heldout = HeldoutScorer(self.cfg, self.prep.shards_dir, self.device)
        return self._heldout(unet)

    def prompt_order(self, n: int) -> torch.Tensor:
        """Which evaluation prompt each of n samples uses: a fixed shuffle, cycled."""
        g = torch.Generator().manual_seed(self.cfg.eval.seed)
        perm = torch.randperm(len(self.index), generator=g)
        return perm[torch.arange(n) % len(perm)]

    @torch.no_grad()
    def generate(self, unet, sampler: str, steps: int, guidance: float, n: int | None = None,
                 seed: int | None = None, part: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
        """n images in [0, 255] and their prompt ids, from fixed noise and prompts for the seed.

        part=(i, k): only slice i of k of the n samples (their prompts, with the slice's own fixed noise)."""
        from study.sampling import sample

        n = n or self.cfg.eval.num_samples
        lo, hi = slice_bounds(n, *part)
        seed = slice_seed(self.cfg.eval.seed if seed is None else seed, *part)
        which = self.prompt_order(n)[lo:hi]
        # The same prompts and initial noise for every model and guidance (common random numbers):
        # differences between cells are then not blurred by sampling different noise.
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((hi - lo, *self.latent_shape), generator=gen)
        images, bs = [], self.cfg.eval.batch_size
        unet = unet.to(self.device).eval()
        for i in range(0, hi - lo, bs):
            idx = which[i:i + bs]
            step_gen = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + i)
            out = sample(unet, sampler, steps, guidance, self.table[self.index[idx]], self.uncond,
                         noise[i:i + bs].to(self.device), generator=step_gen,
                         timestep_spacing=self.cfg.eval.timestep_spacing,
                         prediction_type=self.cfg.model.prediction_type)
            images.append(self.space.decode(out, batch_size=self.cfg.eval.decode_batch_size).cpu())
        return torch.cat(images), which

    def evaluate(self, unet, sampler: str, steps: int, guidance: float) -> dict:
        """FID, KID (with their evaluation noise), alignment and the noise floor for one setting."""
        from study.metrics import evaluate_images

        images, which = self.generate(unet, sampler, steps, guidance)
        use_labels = self.classifier is not None and self.labels is not None
        res = evaluate_images(self.extractor, images, self.reference,
                              labels=self.labels[which].numpy() if use_labels else None,
                              classifier=self.classifier if use_labels else None,
                              texts=[self.prompts[int(i)] for i in which] if self.clip is not None else None,
                              clip=self.clip, batch_size=self.cfg.eval.batch_size, seed=self.cfg.eval.seed)
        res.setdefault("alignment", float("nan"))
        res.setdefault("alignment_metric", "none")
        res["fid_floor"] = res.pop("floor_fid", self.floor_fid)
        return res

    @torch.no_grad()
    def slice_stats(self, unet, sampler: str, steps: int, guidance: float, index: int,
                    parts: int | None = None) -> dict:
        """Slice `index` of `parts` (default eval.fid_slices) of one FID: its feature sums and alignment sums.

        Run the slices anywhere (one Ray task each), then `merge_slices` their outputs into the FID of all."""
        from study.metrics import prompt_accuracy
        from study.metrics.extractors import iter_batches
        from study.metrics.fid import FeatureSums, merge_sums

        parts = parts or self.cfg.eval.fid_slices
        images, which = self.generate(unet, sampler, steps, guidance, part=(index, parts))
        out, sums, seen = {"num_samples": len(images)}, [], 0
        for batch in iter_batches(images, self.cfg.eval.batch_size):
            ids = which[seen:seen + len(batch)]
            sums.append(FeatureSums.of(self.extractor.features(batch).detach().cpu().double().numpy()))
            if self.classifier is not None and self.labels is not None:
                acc = prompt_accuracy(self.classifier, batch, self.labels[ids].numpy()) * len(batch)
                out["prompt_accuracy_sum"] = out.get("prompt_accuracy_sum", 0.0) + acc
            if self.clip is not None:
                score = self.clip.score(batch, [self.prompts[int(i)] for i in ids]) * len(batch)
                out["clip_score_sum"] = out.get("clip_score_sum", 0.0) + score
            seen += len(batch)
        return {**out, "sums": merge_sums(sums)}

    def merge_slices(self, slices: list[dict]) -> dict:
        """FID and alignment of the merged slices: the FID one task computes from the same samples (no KID)."""
        from study.metrics.fid import fid_from_sums, merge_sums

        sums = merge_sums(s["sums"] for s in slices)
        mu, sigma = self.reference.mu, self.reference.sigma
        fid_std = None
        if len(slices) >= 3:
            # The evaluation noise by the delete-one-slice jackknife (the slices are independent groups of
            # samples); with 2 slices it would rest on one degree of freedom, so none is stated.
            k = len(slices)
            loo = np.array([fid_from_sums(merge_sums(s["sums"] for j, s in enumerate(slices) if j != i), mu, sigma)
                            for i in range(k)])
            fid_std = float(np.sqrt((k - 1) / k * np.sum((loo - loo.mean()) ** 2)))
        res = {"fid": fid_from_sums(sums, mu, sigma), "kid": None, "fid_std": fid_std,
               "kid_std": None, "num_samples": sums.count, "fid_floor": self.floor_fid,
               "floor_n": self.reference.floor_n, "fid_slices": len(slices),
               "reference": self.reference.key, "extractor": self.extractor.name,
               "alignment": float("nan"), "alignment_metric": "none"}
        for metric in ("clip_score", "prompt_accuracy"):  # CLIP score first, as evaluate_images
            if all(f"{metric}_sum" in s for s in slices):
                res[metric] = sum(s[f"{metric}_sum"] for s in slices) / sums.count
                if res["alignment_metric"] == "none":
                    res["alignment"], res["alignment_metric"] = res[metric], metric
        return res


def slice_bounds(n: int, index: int, parts: int) -> tuple[int, int]:
    """Samples [lo, hi) of slice `index` of `parts` over n samples (sizes differ by at most one)."""
    if not 0 <= index < parts <= n:
        raise ValueError(f"slice {index} of {parts} over {n} samples: need 0 <= slice < slices <= samples")
    return index * n // parts, (index + 1) * n // parts


def slice_seed(seed: int, index: int, parts: int) -> int:
    """The noise seed of a slice: eval.seed itself when unsplit (today's numbers), else one per (seed, slice)."""
    if parts == 1:
        return seed
    return int(np.random.SeedSequence([seed, parts, index]).generate_state(1)[0])


def load_evaluator(cfg: StudyConfig, prepared_dir: str | Path, device=None) -> Evaluator:
    """An Evaluator for the prepared folder of a config."""
    from study.prepare import prepared_paths

    prep = prepared_paths(cfg)
    if Path(prepared_dir).resolve() != prep.dir.resolve():
        prep = Prepared(dir=Path(prepared_dir), data_dir=Path(json.loads((Path(prepared_dir) / "meta.json")
                                                                      .read_text())["data_dir"]))
    return Evaluator(cfg, prep, device)
