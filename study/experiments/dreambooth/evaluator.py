"""The DreamBooth evaluator: one (sampler, steps, guidance) setting of a fine-tuned UNet -> subject fidelity,
prompt fidelity, the search's combined objective, and language drift (class-prompt samples before and after).

Embedded digits (their documented analogues of the paper's metrics, on the domain network):
- subject_fidelity: mean cosine similarity of the digit classifier's penultimate features of the identifier-
  prompt samples to those of the instance images (DINO's definition, the classifier in DINO's place);
- context_fidelity: the same against the true subject in each prompt's context (held-out digits of the
  prompted class, in the subject's style), which only synthetic data can give;
- prompt_fidelity: the fraction of samples the classifier reads as the prompted digit, with or without the style
  undone (the style mirrors the digit; the context, i.e. which digit, is what the prompt asks for).
The embedded photographs ("photos") use the same metrics: the photograph in place of the digit, the negative in
place of the mirror.
Real data: subject_fidelity is DINO when dreambooth.dino_path is given (else CLIP-I), prompt_fidelity CLIP-T
(the prompt without the identifier), from eval.clip_path; dino, clip_i and clip_t are reported when available.
Language drift: FID of the class-prompt samples of the fine-tuned UNet against those of its base (same noise),
and for digits each one's FID against the real held-out digits of the class (class_fid, class_fid_base).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from study.config import StudyConfig
from study.experiments.dreambooth.subject import Subject, load_subject
from study.prepare import Prepared

BASE_KEY = "_dreambooth_base"  # (hidden: diffusers keeps "_" keys silently) the recipe records the base checkpoint in the fine-tuned UNet's config


def objective_value(subject_fidelity: float, prompt_fidelity: float, target: float, penalty: float) -> float:
    """What the guidance search minimises: -subject fidelity + penalty x shortfall of prompt fidelity."""
    if math.isnan(prompt_fidelity):  # nothing measures prompt fidelity (real data without CLIP): subject only
        return -subject_fidelity
    return -subject_fidelity + penalty * max(0.0, target - prompt_fidelity)


def _sem(values: torch.Tensor) -> float:
    """Standard error of the mean of per-sample values."""
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


class DreamBoothEvaluator:
    """Everything a DreamBooth evaluation needs, loaded once per process."""

    def __init__(self, cfg: StudyConfig, prep: Prepared, device: torch.device | None = None,
                 subject: Subject | None = None):
        from study.autoencoder import load_latent_space
        from study.experiments.dreambooth.prepare import subject_embeddings

        self.cfg, self.prep, self.db = cfg, prep, cfg.dreambooth
        self.device = device or torch.device("cpu")
        self.subject = subject or load_subject(cfg)
        emb = {k: torch.from_numpy(v) for k, v in subject_embeddings(cfg, prep.dir, self.subject).items()}
        self.prompt_emb, self.class_emb, self.uncond = emb["eval"], emb["class"], emb["uncond"]
        self.space = load_latent_space(cfg.autoencoder, prep.autoencoder_dir).to(self.device)
        self.latent_shape = tuple(prep.meta["latent_shape"])
        self._load_metrics()
        self._base_cache: dict[str, torch.nn.Module] = {}
        self._grids: dict[str, str] = {}

    def _load_metrics(self) -> None:
        from study.metrics import ClassifierExtractor, InceptionExtractor, load_classifier

        cfg, s = self.cfg, self.subject
        self.classifier = self.dino = self.clip = None
        if cfg.eval.feature_extractor == "classifier":
            self.classifier = load_classifier(self.prep.evaluator_dir, device=self.device)
            self.extractor = ClassifierExtractor(self.classifier)
        else:
            self.extractor = InceptionExtractor.from_file(cfg.eval.inception_path, device=self.device)
        if self.db.dino_path:
            from study.metrics.subject import DinoEmbedder

            self.dino = DinoEmbedder.from_pretrained(self.db.dino_path, device=self.device)
        if cfg.eval.clip_path:
            from study.metrics import ClipScorer

            self.clip = ClipScorer.from_pretrained(cfg.eval.clip_path, device=self.device)
        # Reference points of subject fidelity: a perfect copy of the subject, and the class without its style.
        from study.metrics.subject import leave_one_out_fidelity, subject_scores

        self.constants = {"subject_fidelity_copy": leave_one_out_fidelity(s.instance_images, self.subject_embed)}
        if s.eval_labels is not None:
            # The scale's other ends on the evaluation's own prompt mix (subject fidelity averages every prompt's
            # samples, the novel contexts included): the real digit each prompt asks for without the style
            # (plain) and in it (styled, the true subject in each context), prompts weighted equally as the
            # samples are. The instance prompt's plain digit alone would set the plain end above what even the
            # true subject scores in the contexts (a styled four is far from a styled three).
            for key, refs in (("subject_fidelity_plain", s.plain_references),
                              ("subject_fidelity_styled", s.styled_references)):
                self.constants[key] = float(np.mean([subject_scores(refs[d], s.instance_images, self.subject_embed)
                                                     for d in s.eval_labels]))

    def subject_embed(self, images) -> torch.Tensor:
        """The embedding subject fidelity compares: DINO, else CLIP-I, else the digit classifier's features."""
        if self.dino is not None:
            return self.dino.embed(images)
        if self.clip is not None:
            from study.metrics.subject import clip_image_embeds

            return clip_image_embeds(self.clip, images)
        if self.classifier is None:
            raise ValueError("subject fidelity needs dreambooth.dino_path or eval.clip_path on real data "
                             "(local model folders); the digit classifier exists for the embedded digits only")
        return self.extractor.features(images)

    def _noise(self, n: int, salt: int) -> torch.Tensor:
        # The same noise for every size, checkpoint and guidance (common random numbers), as study.evaluator.
        g = torch.Generator().manual_seed(self.cfg.eval.seed * 7919 + salt)
        return torch.randn((n, *self.latent_shape), generator=g)

    @torch.no_grad()
    def generate(self, unet, sampler: str, steps: int, guidance: float, cond: torch.Tensor, noise: torch.Tensor,
                 salt: int) -> torch.Tensor:
        """Images in [0, 255] for the conditions cond [N, T, D] from the given noise."""
        from study.sampling import sample

        unet = unet.to(self.device).eval()
        out, bs = [], self.cfg.eval.batch_size
        for i in range(0, len(noise), bs):
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.eval.seed * 1_000_003 + salt + i)
            lat = sample(unet, sampler, steps, guidance, cond[i:i + bs], self.uncond, noise[i:i + bs].to(self.device),
                         generator=gen, timestep_spacing=self.cfg.eval.timestep_spacing,
                         prediction_type=self.cfg.model.prediction_type)
            out.append(self.space.decode(lat).cpu())
        return torch.cat(out)

    def base_of(self, unet):
        """The base UNet a fine-tuned one started from (itself for a base UNet)."""
        from study.weights import load_unet

        path = unet.config.get(BASE_KEY)
        if not path:
            return unet
        if path not in self._base_cache:
            if not Path(path).is_dir():
                raise FileNotFoundError(f"the base checkpoint {path} of this DreamBooth UNet is gone: language "
                                        f"drift compares against it; restore it or retrain the base")
            self._base_cache = {path: load_unet(path, weights=self.db.base_weights)}
        return self._base_cache[path]

    def _prompt_side(self, unet, sampler, steps, guidance) -> tuple[dict, torch.Tensor]:
        from study.metrics.subject import domain_predictions, mean_cosine, per_sample_cosine

        s, k = self.subject, self.db.samples_per_prompt
        cond = self.prompt_emb.repeat_interleave(k, dim=0)
        images = self.generate(unet, sampler, steps, guidance, cond, self._noise(len(cond), 1), salt=1)
        gen_emb = self.subject_embed(images).cpu()
        per = per_sample_cosine(gen_emb, self.subject_embed(s.instance_images).cpu())
        # The evaluation noise of each number (standard error over the samples): the analysis' intervals.
        res = {"subject_fidelity": float(per.mean()), "subject_fidelity_std": _sem(per)}
        if s.eval_labels is not None:
            labels = torch.tensor(s.eval_labels).repeat_interleave(k)
            reads = domain_predictions(self.classifier, images)
            reads_unstyled = domain_predictions(self.classifier, torch.from_numpy(s.style(images.numpy())))
            right = ((reads == labels) | (reads_unstyled == labels)).double()
            res["prompt_fidelity"], res["prompt_fidelity_std"] = float(right.mean()), _sem(right)
            # the style without the class: how often the sample reads right only once its style is undone
            res["style_rate"] = float(((reads_unstyled == labels) & (reads != labels)).float().mean())
            res["context_fidelity"] = float(np.mean([
                mean_cosine(gen_emb[i * k:(i + 1) * k], self.subject_embed(s.styled_references[d]).cpu())
                for i, d in enumerate(s.eval_labels)]))
        else:
            res["prompt_fidelity"] = float("nan")
        if self.clip is not None:
            texts = [p.replace(f"{self.db.identifier} ", "") for p in s.eval_prompts for _ in range(k)]
            clip_t = self.clip.scores(images, texts).double()
            res["clip_t"] = res["prompt_fidelity"] = float(clip_t.mean())
            res["prompt_fidelity_std"] = _sem(clip_t)
            from study.metrics.subject import clip_image_embeds

            res["clip_i"] = mean_cosine(clip_image_embeds(self.clip, images), clip_image_embeds(self.clip, s.instance_images))
        if self.dino is not None:
            res["dino"] = res["subject_fidelity"]
        return res, images

    def _class_side(self, unet, sampler, steps, guidance) -> dict:
        from study.metrics import extract_features, fid_from_stats
        from study.metrics.fid import feature_stats

        n, s = self.db.class_eval_samples, self.subject
        cond = self.class_emb.expand(n, -1, -1)
        noise = self._noise(n, 2)
        after = self.generate(unet, sampler, steps, guidance, cond, noise, salt=2)
        base = self.base_of(unet)
        before = after if base is unet else self.generate(base, sampler, steps, guidance, cond, noise, salt=2)
        fa, fb = extract_features(self.extractor, after), extract_features(self.extractor, before)
        res = {"drift_fid": fid_from_stats(*feature_stats(fa), *feature_stats(fb))}
        if s.class_label is not None:
            real = extract_features(self.extractor, torch.from_numpy(s.plain_references[s.class_label]).float())
            ref = feature_stats(real)
            res["class_fid"] = fid_from_stats(*feature_stats(fa), *ref)
            res["class_fid_base"] = fid_from_stats(*feature_stats(fb), *ref)
            res["language_drift"] = res["class_fid"] - res["class_fid_base"]
            res["class_prompt_fidelity"] = float(
                (torch.as_tensor(self.classifier(after).argmax(1).cpu()) == s.class_label).float().mean())
        return res

    def evaluate(self, unet, sampler: str, steps: int, guidance: float) -> dict:
        """Subject and prompt fidelity, the objective and language drift at one setting."""
        from study.sampling import unet_calls

        prompt, _ = self._prompt_side(unet, sampler, steps, guidance)
        res = {**prompt, **self._class_side(unet, sampler, steps, guidance), **self.constants}
        res["objective"] = objective_value(res["subject_fidelity"], res["prompt_fidelity"],
                                           self.db.prompt_fidelity_target, self.db.prompt_penalty)
        res["fid"] = res.get("class_fid", res["drift_fid"])  # the table's FID column: class-prompt samples
        res["num_samples"] = len(self.subject.eval_prompts) * self.db.samples_per_prompt
        res["unet_calls"] = unet_calls(unet, steps, guidance)
        res["grid_path"] = self.grid(unet)
        return res

    def grid(self, unet) -> str:
        """The size's image grid (written once per UNet): the instance images, then one row per evaluation
        prompt, from the same noise and setting for every size (dreambooth.grid_*), as a PNG path."""
        from torchvision.utils import make_grid, save_image

        from study.identity import stable_hash
        from study.paths import run_dir

        key = f"w{unet.config.block_out_channels[0]}-{stable_hash(str(unet.config.get(BASE_KEY) or id(unet)), 8)}"
        if key in self._grids:
            return self._grids[key]
        k, s = self.db.grid_per_prompt, self.subject
        cond = self.prompt_emb.repeat_interleave(k, dim=0)
        images = self.generate(unet, self.db.samplers[0], max(self.db.steps), self.cfg.eval.default_guidance, cond,
                               self._noise(len(cond), 3), salt=3)
        inst = torch.from_numpy(np.asarray(s.instance_images[:k])).float()
        if inst.shape[1] != images.shape[1]:
            inst = inst.mean(1, keepdim=True).expand(-1, images.shape[1], -1, -1)
        blank = torch.zeros((k - len(inst), *images.shape[1:]))
        tiles = torch.cat([inst, blank, images]) / 255.0
        scale = max(1, 64 // max(tiles.shape[-2:]))  # 8x8 digits are unreadable at native size
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
        out = run_dir(self.cfg) / "dreambooth" / "grids" / f"grid-{key}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(tiles, nrow=k, padding=2, pad_value=0.5), out)
        (out.with_suffix(".json")).write_text(json.dumps({"rows": ["instance images", *s.eval_prompts],
                                                          "sampler": self.db.samplers[0], "steps": max(self.db.steps),
                                                          "guidance": self.cfg.eval.default_guidance}))
        self._grids[key] = str(out.resolve())
        return self._grids[key]


def load_dreambooth_evaluator(cfg: StudyConfig, prepared_dir, device=None) -> DreamBoothEvaluator:
    """A DreamBoothEvaluator for the prepared folder of a config (as study.evaluator.load_evaluator)."""
    from study.prepare import prepared_paths

    prep = prepared_paths(cfg)
    if Path(prepared_dir).resolve() != prep.dir.resolve():
        meta = json.loads((Path(prepared_dir) / "meta.json").read_text())
        prep = Prepared(dir=Path(prepared_dir), data_dir=Path(meta["data_dir"]))
    return DreamBoothEvaluator(cfg, prep, device)
