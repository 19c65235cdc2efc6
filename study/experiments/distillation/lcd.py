"""Latent consistency distillation (LCD; Luo et al. 2023, Algorithm 1) as diffusers' example computes it.

The student (a guidance-embedded copy of the teacher, study.experiments.distillation.student) learns to map a noisy latent at t_{n+k}
straight to the end of the teacher's guided probability-flow ODE: its boundary-conditioned output at t_{n+k}
is pulled towards the target network's output at t_n, where x_{t_n} is one guided DDIM step of the frozen
teacher from x_{t_{n+k}}. The target network is an EMA of the student (diffusers' EMAModel). Every random
draw comes from the caller's position-seeded generator, so a resumed run replays the same steps.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

LOSSES = ("l2", "huber")


def _x0_and_eps(output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x_0 and epsilon implied by a UNet output at x_t = alpha x_0 + sigma eps (as LCMScheduler.step)."""
    if prediction_type == "epsilon":
        return (x - sigma * output) / alpha, output
    if prediction_type == "v_prediction":  # v = alpha eps - sigma x_0 (Salimans & Ho 2022)
        return alpha * x - sigma * output, alpha * output + sigma * x
    raise ValueError(f"prediction_type {prediction_type!r}: expected 'epsilon' or 'v_prediction'")


class LCD:
    """Teacher, target network and the LCD loss; the student is passed in (it is what the trainer optimises)."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, uncond: torch.Tensor, *,
                 prediction_type: str = "epsilon", w_min: float = 5.0, w_max: float = 15.0, loss: str = "huber",
                 huber_c: float = 0.001, target_decay: float = 0.95, solver_steps: int | None = None):
        from diffusers.training_utils import EMAModel

        from study.schedulers import make_sampler, training_scheduler

        if loss not in LOSSES:
            raise ValueError(f"distill.loss={loss!r}: expected one of {', '.join(LOSSES)}")
        if not 0 <= w_min <= w_max:
            raise ValueError(f"distill.w_min={w_min}, distill.w_max={w_max}: expected 0 <= w_min <= w_max")
        train = training_scheduler(prediction_type)
        # The LCM sampler's own config holds the skip grid it samples on (original_inference_steps, 50) and the
        # boundary-condition scalings; distilling on the same grid is what makes its 1-8 step schedules valid.
        self.lcm = make_sampler("lcm", train)
        steps = solver_steps or self.lcm.config.original_inference_steps
        self.k = train.config.num_train_timesteps // steps  # the skip: 1000 // 50 = 20
        # t_{n+k} on DDIM's grid k-1, 2k-1, ..., T-1 (the example's DDIMSolver.ddim_timesteps).
        self.grid = torch.arange(1, steps + 1) * self.k - 1
        self.acp = train.alphas_cumprod.float()
        self.prediction_type, self.w_min, self.w_max = prediction_type, float(w_min), float(w_max)
        self.loss_type, self.huber_c = loss, float(huber_c)
        self.uncond = uncond
        self.teacher = teacher.eval().requires_grad_(False)
        # The target network: a constant-decay EMA of the student (min_decay = decay switches off EMAModel's
        # warm-up), held as EMAModel's shadow copy and mirrored into a frozen module to run it.
        self.ema = EMAModel(student.parameters(), decay=target_decay, min_decay=target_decay, foreach=True)
        self.target = copy.deepcopy(student).eval().requires_grad_(False)
        self.embed_dim = student.config.time_cond_proj_dim

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> LCD:
        """Move teacher and target (in the training dtype) and the schedule tables to a device."""
        for net in (self.teacher, self.target):
            net.to(device)
            if net.dtype != dtype:  # diffusers warns on every dtype cast, even a no-op one
                net.to(dtype=dtype)
        self.ema.to(device=device)  # the shadow stays fp32 whatever the training precision
        self.acp, self.grid, self.uncond = self.acp.to(device), self.grid.to(device), self.uncond.to(device)
        return self

    def _boundary(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # c_skip(t), c_out(t) of the consistency parameterisation (LCM eq. 9): diffusers' LCMScheduler utility.
        c_skip, c_out = self.lcm.get_scalings_for_boundary_condition_discrete(t.float())
        return c_skip[:, None, None, None], c_out[:, None, None, None]

    def _consistency(self, unet, x: torch.Tensor, t: torch.Tensor, context, w_emb, dtype) -> torch.Tensor:
        """f(x, t) = c_skip(t) x + c_out(t) x_0(x, t): the consistency function of a guidance-embedded UNet."""
        out = unet(x.to(dtype), t, encoder_hidden_states=context.to(dtype), timestep_cond=w_emb.to(dtype),
                   return_dict=False)[0].float()
        a, s = self.acp[t].sqrt()[:, None, None, None], (1 - self.acp[t]).sqrt()[:, None, None, None]
        x0, _ = _x0_and_eps(out, x, a, s, self.prediction_type)
        c_skip, c_out = self._boundary(t)
        return c_skip * x + c_out * x0

    def loss(self, student, latents: torch.Tensor, context: torch.Tensor, gen: torch.Generator,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The LCD loss of one micro-batch (latents [B, C, H, W], caption states [B, T, D])."""
        from study.sampling import guidance_embedding

        b, dev = latents.shape[0], latents.device
        index = torch.randint(0, len(self.grid), (b,), generator=gen, device=dev)
        start = self.grid[index]  # t_{n+k}
        end = (start - self.k).clamp(min=0)  # t_n
        noise = torch.randn(latents.shape, generator=gen, device=dev)
        a, s = self.acp[start].sqrt()[:, None, None, None], (1 - self.acp[start]).sqrt()[:, None, None, None]
        x_start = a * latents + s * noise  # forward diffusion to t_{n+k} (DDPM eq. 4)
        w = self.w_min + (self.w_max - self.w_min) * torch.rand(b, generator=gen, device=dev)
        w_emb = guidance_embedding(w.cpu(), self.embed_dim).to(dev)

        pred = self._consistency(student, x_start, start, context, w_emb, dtype)
        with torch.no_grad():
            x_end = self.teacher_step(x_start, start, context, w, dtype)
            target = self._consistency(self.target, x_end, end, context, w_emb, dtype)
        if self.loss_type == "l2":
            return F.mse_loss(pred, target)
        # Pseudo-Huber (Song & Dhariwal 2023), as the diffusers example's --loss_type huber.
        return torch.mean(torch.sqrt((pred - target) ** 2 + self.huber_c ** 2) - self.huber_c)

    @torch.no_grad()
    def teacher_step(self, x: torch.Tensor, start: torch.Tensor, context: torch.Tensor, w: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x_{t_n} from x_{t_{n+k}}: one DDIM step (eta 0) of the frozen teacher, guided with scale w + 1."""
        b = x.shape[0]
        end = (start - self.k).clamp(min=0)
        # The conditional and unconditional halves in one batch.
        out = self.teacher(torch.cat([x, x]).to(dtype), torch.cat([start, start]),
                           encoder_hidden_states=torch.cat([context, self.uncond.expand_as(context)]).to(dtype),
                           return_dict=False)[0].float()
        a, s = self.acp[start].sqrt()[:, None, None, None], (1 - self.acp[start]).sqrt()[:, None, None, None]
        x0_c, eps_c = _x0_and_eps(out[:b], x, a, s, self.prediction_type)
        x0_u, eps_u = _x0_and_eps(out[b:], x, a, s, self.prediction_type)
        w4 = w[:, None, None, None]
        # Guidance in the LCM paper's form, eps_c + w (eps_c - eps_u): Imagen's (and the pipelines') scale is
        # w + 1, which is why samplers embed guidance - 1.
        x0, eps = x0_c + w4 * (x0_c - x0_u), eps_c + w4 * (eps_c - eps_u)
        a_end, s_end = self.acp[end].sqrt()[:, None, None, None], (1 - self.acp[end]).sqrt()[:, None, None, None]
        return a_end * x0 + s_end * eps  # DDIM (Song et al. 2021, eq. 12 with sigma = 0)

    @torch.no_grad()
    def update_target(self, student) -> None:
        """One EMA step of the target network towards the student (after each optimizer step)."""
        self.ema.step(student.parameters())
        self.ema.copy_to(self.target.parameters())

    def state(self) -> dict[str, torch.Tensor]:
        """The target network's EMA state as flat tensors (saved with every checkpoint)."""
        names = [n for n, _ in self.target.named_parameters()]
        out = {f"target.{n}": p.detach().cpu().contiguous() for n, p in zip(names, self.ema.shadow_params)}
        out["target_ema_step"] = torch.tensor(self.ema.optimization_step)
        return out

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what state() saved (on resume)."""
        for (name, _), shadow in zip(self.target.named_parameters(), self.ema.shadow_params):
            shadow.copy_(tensors[f"target.{name}"])
        self.ema.optimization_step = int(tensors["target_ema_step"])
        self.ema.copy_to(self.target.parameters())
