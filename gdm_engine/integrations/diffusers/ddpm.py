"""DDPMScheduler and DDIMScheduler: VP-form steps, one fused launch each (see _fused.affine_plan).

Clip (clip_sample) takes the DDPM and DDIM kernels of loop_step, which clamp x0 inside the step;
their pred_original_sample (the clipped x0) then takes a second launch.
"""

import math
from typing import Any, Optional, Union, cast

import torch
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

from gdm_engine.ops import diffusion as step_ops

from ._fused import (
    _UNIT_CHURN,
    PREDICTION_TYPES,
    AffinePlan,
    FusedScheduler,
    Guidance,
    affine_plan,
    diffusers,
    draw_noise,
    euler_launch,
    guidance_options,
    guided_output,
    output,
    unsupported,
)

# DDPM's variance types the kernel reproduces: the standard deviation of the added noise
_VARIANCES = {
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
}


class _VPScheduler(FusedScheduler):
    """A step counter for schedulers that take the timestep as given: the counter names the
    step among `timesteps`; a Python int timestep is checked against it on the host (free), a
    tensor one is not read (that would sync a GPU)."""

    def set_begin_index(self, begin_index: int = 0) -> None:
        """The first step's index, as diffusers' σ schedulers have it (pipelines that start
        part way, img2img, call it).

        Args:
            begin_index: the index in `timesteps` of the first step.
        """
        self._begin_index = begin_index

    def _vp_index(self, timestep: Union[int, torch.Tensor]) -> int:
        index = self._fused_index_value()
        if isinstance(timestep, int) and self._host_timesteps()[index] != timestep:
            index = self._host_timesteps().index(timestep)
        self._fused_index = index + 1
        return index

    def _fused_index_value(self) -> int:
        index = getattr(self, "_fused_index", None)
        return index if index is not None else (getattr(self, "_begin_index", None) or 0)

    def _host_timesteps(self) -> list[int]:
        if getattr(self, "_timestep_list", None) is None or getattr(self, "_plan", None) is None:
            self._timestep_list = [int(t) for t in self.timesteps.cpu()]
        return self._timestep_list

    def _alpha_bars(self) -> list[float]:
        return self.alphas_cumprod.double().tolist()

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        if self.config.thresholding:
            return "thresholding=True (its bound sample_max_value has no kernel counterpart)"
        if self.config.prediction_type not in PREDICTION_TYPES:
            return unsupported("prediction_type", self.config.prediction_type)
        return None

    def _clip(self) -> Optional[float]:
        return self.config.clip_sample_range if self.config.clip_sample else None

    def _clipped_x0(
        self, x: torch.Tensor, model_output: torch.Tensor, alpha_bar: float, guidance: Guidance
    ) -> torch.Tensor:
        """pred_original_sample under clip_sample: the model's x0 (one more launch), clamped."""
        sigma = math.sqrt((1 - alpha_bar) / alpha_bar)
        _, x0 = euler_launch(
            x,
            model_output,
            sigma,
            sigma,
            guidance=guidance,
            prediction=PREDICTION_TYPES[self.config.prediction_type],
            scales=(1 / math.sqrt(alpha_bar), 1.0),
        )
        clip = cast(float, self._clip())  # called under clip_sample only
        return cast(torch.Tensor, x0).clamp(-clip, clip)  # x0: euler_launch's denoised=True

    def _affine(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        plan: AffinePlan,
        noise: Optional[torch.Tensor],
        guidance: Guidance,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        sigma, sigma_next, scales, std = plan
        return euler_launch(
            x,
            model_output,
            sigma,
            sigma_next,
            scales=scales,
            guidance=guidance,
            prediction=PREDICTION_TYPES[self.config.prediction_type],
            noise=noise,
            noise_coefficient=std,
        )


class DDPMScheduler(_VPScheduler, diffusers.DDPMScheduler):
    """diffusers' DDPMScheduler with a fused `step` (Ho et al., 2020, Algorithm 2) and
    `add_noise` through the engine's q_sample. Noise: upstream's draw (randn_tensor with its
    generator), so both agree for one seed; `kernel_noise=True` in `step` draws it in the
    kernel instead (a different random stream, no draw on the host)."""

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step (thresholding, a variance_type or
        prediction_type the kernel lacks), or None where the fused step covers it."""
        if self.config.variance_type not in _VARIANCES:
            return unsupported("variance_type", self.config.variance_type)
        return super().fallback_reason()

    def _plan_rows(self) -> list[tuple[int, float, float, Optional[AffinePlan], bool]]:
        """Per step: (t, ᾱ_t, ᾱ_prev), the affine plan (None: not expressible)."""
        alpha_bars, rows = self._alpha_bars(), []
        for t in self._host_timesteps():
            prev = int(self.previous_timestep(t))
            a, a_prev = alpha_bars[t], alpha_bars[prev] if prev >= 0 else 1.0
            beta = 1 - a / a_prev
            variance = (
                beta
                if self.config.variance_type == "fixed_large"
                else max((1 - a_prev) / (1 - a) * beta, 1e-20)
            )
            std = math.sqrt(variance) if t > 0 else 0.0  # upstream adds noise where t > 0
            plan = affine_plan(
                a,
                math.sqrt(a_prev) * beta / (1 - a),
                math.sqrt(1 - beta) * (1 - a_prev) / (1 - a),
                std,
            )
            # the clamping kernel adds no noise where ᾱ_prev = 1: fixed_large's β there is
            # upstream's
            clippable = not (
                std > 0 and a_prev == 1.0 and self.config.variance_type == "fixed_large"
            )
            rows.append((t, a, a_prev, plan, clippable))
        return rows

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        *,
        kernel_noise: bool = False,
        _guidance: Guidance = None,
    ) -> Union[DDPMSchedulerOutput, tuple]:
        """One fused step (upstream's arguments and outputs); `timestep` is not read: the step
        counter follows `timesteps` (a Python int is checked against it).

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x_t.
            generator: draws the noise, as upstream's (unless kernel_noise).
            return_dict: return DDPMSchedulerOutput (True) or a tuple.
            kernel_noise: draw the noise in the kernel from a seed taken from `generator`.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            DDPMSchedulerOutput(prev_sample, pred_original_sample), or the tuple.
        """
        if self.fallback_reason() is not None or model_output.shape != sample.shape:
            return self._upstream(model_output, timestep, sample, generator, return_dict, _guidance)
        t, a, a_prev, plan, clippable = self._row(self._vp_index(timestep))
        if plan is None or (self._clip() is not None and not clippable):
            return self._upstream(model_output, timestep, sample, generator, return_dict, _guidance)
        noise = draw_noise(model_output, generator) if t > 0 and not kernel_noise else None
        x0: Optional[torch.Tensor]
        if self._clip() is not None:
            seed = step_ops.noise_seed(None, generator) if kernel_noise and t > 0 else None
            prev = step_ops.loop_step(
                "ddpm",
                sample,
                model_output,
                (a, a_prev),
                noise=noise,
                seed=seed,
                prediction=PREDICTION_TYPES[self.config.prediction_type],
                variance=_VARIANCES[self.config.variance_type],
                clip=self._clip(),
                **guidance_options(_guidance),
            )
            prev = cast(torch.Tensor, prev)  # the "ddpm" kernel's x' alone
            x0 = self._clipped_x0(sample, model_output, a, _guidance)
        elif kernel_noise and t > 0:
            prev, x0 = self._kernel_noise(sample, model_output, plan, generator, _guidance)
        else:
            prev, x0 = self._affine(sample, model_output, plan, noise, _guidance)
        return output(DDPMSchedulerOutput, return_dict, prev, x0)

    def _kernel_noise(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        plan: AffinePlan,
        generator: Optional[torch.Generator],
        guidance: Guidance,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine step with z drawn in the kernel from a seed taken from `generator`."""
        sigma, sigma_next, scales, std = plan
        seed = step_ops.noise_seed(None, generator)
        out = step_ops.loop_step(
            "euler",
            x,
            model_output,
            (sigma, sigma_next),
            scales=scales,
            seed=seed,
            denoised=True,
            churn=_UNIT_CHURN,
            s_noise=std / (sigma_next * scales[1]),
            prediction=PREDICTION_TYPES[self.config.prediction_type],
            **guidance_options(guidance),
        )
        return cast(tuple[torch.Tensor, torch.Tensor], out)  # (x', D): denoised=True

    def _upstream(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator],
        return_dict: bool,
        guidance: Guidance,
    ) -> Union[DDPMSchedulerOutput, tuple]:
        return super().step(
            guided_output(model_output, guidance),
            timestep,
            sample,
            generator=generator,
            return_dict=return_dict,
        )

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: Union[torch.Tensor, int, list[int]],
    ) -> torch.Tensor:
        """Upstream's add_noise, √ᾱ_t x0 + √(1 − ᾱ_t) ε (Ho et al., 2020, eq. 4), in one
        q_sample kernel.

        Args:
            original_samples: the clean samples x0 (N, ...).
            noise: ε, shaped like original_samples.
            timesteps: one timestep, or one per sample.

        Returns:
            x_t, shaped like original_samples.
        """
        return _q_sample(self, original_samples, noise, timesteps)


class DDIMScheduler(_VPScheduler, diffusers.DDIMScheduler):
    """diffusers' DDIMScheduler with a fused `step` (Song et al., 2021, eq. 12 and 16) and
    `add_noise` through q_sample. With eta > 0 the noise is `variance_noise` where given, else
    upstream's draw from `generator`."""

    def _plan_rows(self) -> list[tuple[float, float]]:
        """Per step: (ᾱ_t, ᾱ_prev); the affine plan depends on eta, a step argument."""
        alpha_bars, rows = self._alpha_bars(), []
        final = float(self.final_alpha_cumprod)
        for t in self._host_timesteps():
            prev = t - self.config.num_train_timesteps // self.num_inference_steps
            rows.append((alpha_bars[t], alpha_bars[prev] if prev >= 0 else final))
        return rows

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Optional[torch.Generator] = None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[DDIMSchedulerOutput, tuple]:
        """One fused step (upstream's arguments and outputs); the step counter, not `timestep`,
        names the step.

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x_t.
            eta: η, the weight of the added noise (0: deterministic DDIM).
            use_clipped_model_output: re-derive ε from the clipped x0, as upstream.
            generator: draws the noise where eta > 0 and no variance_noise is given.
            variance_noise: the noise itself, instead of a draw.
            return_dict: return DDIMSchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            DDIMSchedulerOutput(prev_sample, pred_original_sample), or the tuple.

        Raises:
            ValueError: both generator and variance_noise are given with eta > 0 (as upstream).
        """
        reason = self.fallback_reason() if self.num_inference_steps is not None else "no steps"
        if reason is not None:
            return self._upstream(
                model_output,
                timestep,
                sample,
                eta,
                use_clipped_model_output,
                generator,
                variance_noise,
                return_dict,
                _guidance,
            )
        if variance_noise is not None and generator is not None and eta > 0:
            raise ValueError(
                "Cannot pass both generator and variance_noise. Please make sure "
                "that either `generator` or `variance_noise` stays `None`."
            )
        a, a_prev = self._row(self._vp_index(timestep))
        std = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        direction = 1 - a_prev - std**2
        plan = affine_plan(
            a,
            math.sqrt(a_prev) - math.sqrt(max(direction, 0) * a / (1 - a)),
            math.sqrt(max(direction, 0) / (1 - a)),
            std,
        )
        if plan is None or direction < 0:  # upstream's √ of a negative: its NaN
            return self._upstream(
                model_output,
                timestep,
                sample,
                eta,
                use_clipped_model_output,
                generator,
                variance_noise,
                return_dict,
                _guidance,
            )
        noise = None
        if eta > 0:
            noise = (
                variance_noise
                if variance_noise is not None
                else draw_noise(model_output, generator)
            )
        x0: Optional[torch.Tensor]
        if self._clip() is not None:
            prev = step_ops.loop_step(
                "ddim",
                sample,
                model_output,
                (a, a_prev),
                eta=float(eta),
                prediction=PREDICTION_TYPES[self.config.prediction_type],
                clip=self._clip(),
                noise=noise,
                clipped_eps=bool(use_clipped_model_output),
                **guidance_options(_guidance),
            )
            prev = cast(torch.Tensor, prev)  # the "ddim" kernel's x' alone
            x0 = self._clipped_x0(sample, model_output, a, _guidance)
        else:
            prev, x0 = self._affine(sample, model_output, plan, noise, _guidance)
        return output(DDIMSchedulerOutput, return_dict, prev, x0)

    def _upstream(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        eta: float,
        use_clipped_model_output: bool,
        generator: Optional[torch.Generator],
        variance_noise: Optional[torch.Tensor],
        return_dict: bool,
        guidance: Guidance,
    ) -> Union[DDIMSchedulerOutput, tuple]:
        return super().step(
            guided_output(model_output, guidance),
            timestep,
            sample,
            eta=eta,
            use_clipped_model_output=use_clipped_model_output,
            generator=generator,
            variance_noise=variance_noise,
            return_dict=return_dict,
        )

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: Union[torch.Tensor, int, list[int]],
    ) -> torch.Tensor:
        """Upstream's add_noise, √ᾱ_t x0 + √(1 − ᾱ_t) ε (Ho et al., 2020, eq. 4), in one
        q_sample kernel.

        Args:
            original_samples: the clean samples x0 (N, ...).
            noise: ε, shaped like original_samples.
            timesteps: one timestep, or one per sample.

        Returns:
            x_t, shaped like original_samples.
        """
        return _q_sample(self, original_samples, noise, timesteps)


def _q_sample(
    scheduler: Any,
    original_samples: torch.Tensor,
    noise: torch.Tensor,
    timesteps: Union[torch.Tensor, int, list[int]],
) -> torch.Tensor:
    """√ᾱ_t x0 + √(1 − ᾱ_t) ε through the engine's q_sample: ᾱ_t gathered on the samples'
    device (alphas_cumprod moved there once), one kernel for the rest."""
    cached = getattr(scheduler, "_device_alpha_bars", None)
    if cached is None or cached.device != original_samples.device:
        cached = scheduler.alphas_cumprod.to(original_samples.device, torch.float32)
        scheduler._device_alpha_bars = cached
    timesteps = (
        timesteps.to(original_samples.device)
        if isinstance(timesteps, torch.Tensor)
        else torch.as_tensor(timesteps, device=original_samples.device)
    )
    alpha_bar = cached[timesteps].reshape(-1).expand(original_samples.shape[0])
    if alpha_bar.dtype != original_samples.dtype:
        alpha_bar = alpha_bar.to(torch.float32)
    return step_ops.q_sample(original_samples, alpha_bar, noise)
