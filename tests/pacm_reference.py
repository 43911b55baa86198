"""An independent float64 reference of PACM, written from the papers' equations for `test_pacm_reference.py`.

DDIM (Song et al. 2021, eq. 12 with eta 0) on Stable Diffusion 1.5's scheduler config, null-text inversion's
per-step Adam for the source (PoseAnimate Sec. 3.2, Fig. 3) and PoseAnimate's Algorithm 1 for the frames. It imports
nothing from `zeroshot`: only the models (diffusers' UNet and ControlNet, run here in float64) are shared with the
project.
"""

import copy
import math

import torch


class Reference:
    """Float64 DDIM, ControlNet-conditioned noise prediction, and PACM's three stages, from the equations."""

    def __init__(self, components, steps: int):
        self.unet = copy.deepcopy(components.unet).double()
        self.controlnet = copy.deepcopy(components.controlnet).double()
        config = components.scheduler.config
        # scaled_linear betas, alpha-bar as their running product (DDPM); "leading" DDIM timesteps with offset 1.
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps).double() ** 2
        self.alpha_bar = torch.cumprod(1 - betas, 0)
        ratio = config.num_train_timesteps // steps
        self.timesteps = [i * ratio + config.steps_offset for i in reversed(range(steps))]
        self.ratio = ratio

    def alphas(self, i: int) -> tuple[float, float]:
        """alpha-bar at sampling step i's timestep and at the one it goes to (alpha-bar[0] past the end: SD 1.5's
        `set_alpha_to_one=False`)."""
        t = self.timesteps[i]
        previous = t - self.ratio
        return float(self.alpha_bar[t]), float(self.alpha_bar[previous if previous >= 0 else 0])

    def noise(self, z: torch.Tensor, i: int, text: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(self.timesteps[i])
        down, mid = self.controlnet(z, t, text, controlnet_cond=pose, return_dict=False)
        return self.unet(z, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

    @staticmethod
    def move(z: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
        """DDIM (eta 0): predict x0 from z at alpha_from, then re-noise it with the same eps to alpha_to."""
        x0 = (z - math.sqrt(1 - alpha_from) * eps) / math.sqrt(alpha_from)
        return math.sqrt(alpha_to) * x0 + math.sqrt(1 - alpha_to) * eps

    def guided_sample(self, z, i, unconditional, conditional, pose, guidance):
        eps_u = self.noise(z, i, unconditional, pose)
        eps_c = self.noise(z, i, conditional, pose)
        a, a_prev = self.alphas(i)
        return self.move(z, eps_u + guidance * (eps_c - eps_u), a, a_prev)

    @torch.no_grad()
    def inversion(self, z0, conditional, pose):
        """Z_0 .. Z_T: the step to Z_j evaluates the model at Z_{j-1} with the timestep sampling uses at Z_j."""
        latents = [z0]
        steps = len(self.timesteps)
        for j in range(steps):
            i = steps - 1 - j
            a, a_prev = self.alphas(i)
            eps = self.noise(latents[-1], i, conditional, pose)
            latents.append(self.move(latents[-1], eps, a_prev, a))
        return latents

    def source(self, latents, unconditional, conditional, pose, inner_steps, lr, decay, guidance):
        """Pose-aware inversion (null-text inversion on the conditional slot): per step, a fresh Adam (torch's
        defaults: betas 0.9/0.999, eps 1e-8) minimises |sample(Z_t, e) - Z_{t-1}|^2 from the previous step's e; the
        carried latent is sampled with the final e."""
        steps = len(self.timesteps)
        z, e, per_step = latents[steps], conditional.clone(), []
        for i in range(steps):
            target = latents[steps - i - 1]
            m, v = torch.zeros_like(e), torch.zeros_like(e)
            step_lr = lr * (1 - decay * i)
            for k in range(1, inner_steps + 1):
                e = e.detach().requires_grad_(True)
                loss = (self.guided_sample(z, i, unconditional, e, pose, guidance) - target).pow(2).mean()
                (g,) = torch.autograd.grad(loss, e)
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                update = step_lr * (m / (1 - 0.9**k)) / ((v / (1 - 0.999**k)).sqrt() + 1e-8)
                e = (e - update).detach()
            with torch.no_grad():
                z = self.guided_sample(z, i, unconditional, e, pose, guidance)
            per_step.append(e)
        return per_step

    def frame(self, latents, source_embeddings, unconditional, pose, eta, guidance):
        """Alg. 1 for one frame: from Z_T, at each step t sample with e = (the source's e_t) (line 6), then
        e <- e - eta * grad MSE(Z_{t-1}, sample) (line 7); the sample of line 6 is carried."""
        steps = len(self.timesteps)
        z, per_step = latents[steps], []
        for i in range(steps):
            e = source_embeddings[i].clone().requires_grad_(True)
            sample = self.guided_sample(z, i, unconditional, e, pose, guidance)
            loss = (sample - latents[steps - i - 1]).pow(2).mean()
            (g,) = torch.autograd.grad(loss, e)
            per_step.append((e - eta * g).detach())
            z = sample.detach()
        return per_step

    @torch.no_grad()
    def generate(self, latent_t, embeddings, unconditional, pose, guidance):
        """Plain guided DDIM sampling of one frame with per-step conditional embeddings."""
        z = latent_t
        for i in range(len(self.timesteps)):
            z = self.guided_sample(z, i, unconditional, embeddings[i], pose, guidance)
        return z
