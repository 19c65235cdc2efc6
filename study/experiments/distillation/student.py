"""Model surgery for latent consistency distillation (LCD): the student is the teacher with a guidance input.

Core, with no trainer: the recipe (trainers/recipes/distill.py) builds its student here, and tests and the
benchmark use the same function.
"""

from __future__ import annotations

import torch

# diffusers' LCM-SD default (train_lcm_distill_sd_wds.py, unet_time_cond_proj_dim): the width of the
# sinusoidal guidance embedding, independent of the UNet's own width.
GUIDANCE_EMBED_DIM = 256


def student_from_teacher(teacher: torch.nn.Module, embed_dim: int = GUIDANCE_EMBED_DIM) -> torch.nn.Module:
    """A copy of the teacher UNet that takes the guidance scale (time_cond_proj_dim), equal to it at start.

    The new projection (time_embedding.cond_proj, a bias-free Linear added to the timestep embedding) is
    zero-initialised, so the student computes exactly what the teacher computes until training moves it.
    diffusers' example loads the teacher with strict=False and leaves it random; zeros make the starting
    point the teacher itself (LCM paper, Sec. 4.2: the student is initialised from the teacher).
    """
    from diffusers import UNet2DConditionModel

    if teacher.config.get("time_cond_proj_dim") is not None:
        raise ValueError("the teacher already takes a guidance input (time_cond_proj_dim is set): distil a base "
                         "checkpoint, not a distilled one")
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 2:
        raise ValueError(f"embed_dim={embed_dim!r}: expected an integer >= 2 (distill.guidance_embed_dim)")
    config = {k: v for k, v in dict(teacher.config).items() if not k.startswith("_")}
    student = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": embed_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(f"student/teacher mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.zero_()
    if "prediction_type" in config:  # recorded by the trainer with register_to_config; from_config drops it
        student.register_to_config(prediction_type=config["prediction_type"])
    student.to(teacher.device)
    return student if teacher.dtype == student.dtype else student.to(dtype=teacher.dtype)
