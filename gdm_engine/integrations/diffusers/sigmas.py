"""The σ-form schedulers: EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete,
DPMSolverMultistep (DPM-Solver++(2M)) and FlowMatchEulerDiscrete. Each step is one fused launch
at the plan's row that upstream's own step counter (`_step_index`) names; where upstream finds
its first index by a timestep lookup (nonzero().item(), diffusers issue 3950), the counter
starts at the begin index (0, or set_begin_index's)."""

import math
from typing import Optional, Union, cast

import torch
from diffusers.schedulers.scheduling_euler_ancestral_discrete import (
    EulerAncestralDiscreteSchedulerOutput,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteSchedulerOutput,
)
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from gdm_engine.ops.diffusion import loop_step

from ._fused import (
    PREDICTION_TYPES,
    FusedScheduler,
    Guidance,
    diffusers,
    draw_noise,
    euler_launch,
    guidance_options,
    guided_output,
    output,
    unsupported,
)


class _SigmaScheduler(FusedScheduler):
    """Plans from the CPU sigmas (upstream keeps them there, or set_timesteps builds them there
    here); `_advance` moves upstream's counter as its step would."""

    def _plan_rows(self) -> list[float]:
        return self.sigmas.double().tolist()

    def _advance(self) -> int:
        index = self._next_index()
        self._step_index = index + 1
        return index

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        if self.config.prediction_type not in PREDICTION_TYPES:
            return unsupported("prediction_type", self.config.prediction_type)
        return None

    def _prediction(self) -> str:
        return PREDICTION_TYPES[self.config.prediction_type]

    def _sigma_pair(self, index: int) -> tuple[float, float]:
        self._row(0)
        plan = cast(list[float], self._plan)  # built by _row
        return plan[index], plan[index + 1]


class EulerDiscreteScheduler(_SigmaScheduler, diffusers.EulerDiscreteScheduler):
    """diffusers' EulerDiscreteScheduler with a fused `step` (Karras et al., 2022, Alg. 1).
    Steps with churn (γ > 0: s_churn > 0 and s_tmin <= σ <= s_tmax) run upstream's step:
    upstream lifts x before it forms pred_original_sample, which one launch cannot return."""

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[EulerDiscreteSchedulerOutput, tuple]:
        """One fused Euler step (upstream's arguments and outputs); steps that churn, and the
        configurations of fallback_reason, run upstream's.

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x at σ.
            s_churn: upstream's churn; a step that churns runs upstream's step.
            s_tmin: the lowest σ that churns.
            s_tmax: the highest σ that churns.
            s_noise: the churn noise's scale.
            generator: draws the churn noise (upstream's step).
            return_dict: return EulerDiscreteSchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            EulerDiscreteSchedulerOutput(prev_sample, pred_original_sample), or the tuple.
        """
        index = self._next_index()
        sigma, sigma_next = self._sigma_pair(index)
        churned = s_churn > 0 and s_tmin <= sigma <= s_tmax
        if self.fallback_reason() is not None or churned or sigma == 0:
            return super().step(
                guided_output(model_output, _guidance),
                timestep,
                sample,
                s_churn,
                s_tmin,
                s_tmax,
                s_noise,
                generator,
                return_dict,
            )
        self._advance()
        prev, x0 = euler_launch(
            sample,
            model_output,
            sigma,
            sigma_next,
            prediction=self._prediction(),
            guidance=_guidance,
        )
        return output(
            EulerDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
            x0,
        )


class EulerAncestralDiscreteScheduler(_SigmaScheduler, diffusers.EulerAncestralDiscreteScheduler):
    """diffusers' EulerAncestralDiscreteScheduler with a fused `step`: the Euler step to σ_down
    plus σ_up·z (k-diffusion's sample_euler_ancestral), z upstream's draw from `generator`."""

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        if self.config.prediction_type == "sample":
            return "prediction_type='sample' (upstream raises NotImplementedError)"
        return super().fallback_reason()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[EulerAncestralDiscreteSchedulerOutput, tuple]:
        """One fused ancestral step (upstream's arguments and outputs), its noise upstream's draw.

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x at σ.
            generator: draws the noise z.
            return_dict: return EulerAncestralDiscreteSchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            EulerAncestralDiscreteSchedulerOutput(prev_sample, pred_original_sample), or the
            tuple.
        """
        index = self._next_index()
        sigma, sigma_to = self._sigma_pair(index)
        if self.fallback_reason() is not None or sigma == 0:
            return super().step(
                guided_output(model_output, _guidance), timestep, sample, generator, return_dict
            )
        self._advance()
        sigma_up = math.sqrt(sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2)
        sigma_down = math.sqrt(sigma_to**2 - sigma_up**2)
        noise = draw_noise(model_output, generator)  # drawn on every step, as upstream does
        prev, x0 = euler_launch(
            sample,
            model_output,
            sigma,
            sigma_down,
            noise=noise,
            noise_coefficient=sigma_up if sigma_down > 0 else 0.0,
            prediction=self._prediction(),
            guidance=_guidance,
        )
        return output(
            EulerAncestralDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
            x0,
        )


class HeunDiscreteScheduler(_SigmaScheduler, diffusers.HeunDiscreteScheduler):
    """diffusers' HeunDiscreteScheduler with a fused `step`: its first call (an Euler step to
    the next σ) one launch; its second, Heun's correction (Karras et al., 2022, Alg. 2), one
    launch of the Heun kernel from the first call's sample and output, plus one for its
    pred_original_sample (D at the Euler point)."""

    # between the two calls of a step: the first call's sample, σ_next − σ (upstream's dt, whose
    # None marks the first call) and (model output, guidance)
    sample: Optional[torch.Tensor]
    dt: Optional[float]
    _first: Optional[tuple[torch.Tensor, Guidance]]

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        if self.config.clip_sample:
            return "clip_sample=True (the Heun kernel does not clamp)"
        return super().fallback_reason()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[HeunDiscreteSchedulerOutput, tuple]:
        """One fused step (upstream's arguments and outputs): the Euler step on the first call,
        Heun's correction on the second.

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x at σ.
            return_dict: return HeunDiscreteSchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            HeunDiscreteSchedulerOutput(prev_sample, pred_original_sample), or the tuple.
        """
        index = self._next_index()
        first = self.state_in_first_order
        sigma, sigma_next = self._sigma_pair(index if first else index - 1)
        if self.fallback_reason() is not None or sigma == 0:
            return super().step(
                guided_output(model_output, _guidance), timestep, sample, return_dict
            )
        self._advance()
        prediction = self._prediction()
        if first:
            prev, x0 = euler_launch(
                sample, model_output, sigma, sigma_next, prediction=prediction, guidance=_guidance
            )
            # the correction recomputes the Euler point from these (upstream keeps d and dt)
            self.sample, self.dt = sample, sigma_next - sigma
            self._first = (model_output, _guidance)
        else:
            first_output, first_guidance = cast(tuple[torch.Tensor, Guidance], self._first)
            options = guidance_options(first_guidance)
            if _guidance is not None:
                options["uncond_second"] = _guidance[0]
            heun = loop_step(
                "heun",
                cast(torch.Tensor, self.sample),  # the first call's
                first_output,
                (sigma, sigma_next),
                second=model_output,
                prediction=prediction,
                **options,
            )
            prev = cast(torch.Tensor, heun)  # the Heun kernel's x' alone
            _, x0 = euler_launch(
                sample,
                model_output,
                sigma_next,
                sigma_next,
                prediction=prediction,
                guidance=_guidance,
            )
            self.sample, self.dt, self._first = None, None, None
        return output(HeunDiscreteSchedulerOutput, return_dict, prev, x0)


class DPMSolverMultistepScheduler(_SigmaScheduler, diffusers.DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistepScheduler with a fused `step` for DPM-Solver++(2M) (Lu et
    al., 2022, Alg. 2; solver_type "midpoint"): the previous denoised estimate kept in
    `model_outputs` as upstream keeps it; first order on the first step and where upstream's
    lower_order_final / euler_at_final / final_sigmas_type="zero" ask for it."""

    model_outputs: list[Optional[torch.Tensor]]  # upstream's: the latest denoised estimates
    lower_order_nums: int

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step (another algorithm, order or solver
        type, thresholding, ...), or None where the fused DPM-Solver++(2M) covers it."""
        config = self.config
        for name, covered in (
            ("algorithm_type", "dpmsolver++"),
            ("solver_order", 2),
            ("solver_type", "midpoint"),
            ("thresholding", False),
            ("variance_type", None),
            ("use_lu_lambdas", False),
            ("use_flow_sigmas", False),
        ):
            if config.get(name, covered) != covered:
                return unsupported(name, config[name])
        return super().fallback_reason()

    def _first_order(self, index: int) -> bool:
        steps = len(self.timesteps)
        final = index == steps - 1 and (
            self.config.euler_at_final
            or self.config.final_sigmas_type == "zero"
            or (self.config.lower_order_final and steps < 15)
        )
        return self.lower_order_nums < 1 or final

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[SchedulerOutput, tuple]:
        """One fused DPM-Solver++(2M) step (upstream's arguments and outputs).

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x at σ.
            generator: upstream's (its SDE variants; unused by the fused step).
            variance_noise: upstream's (its SDE variants; unused by the fused step).
            return_dict: return SchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            SchedulerOutput(prev_sample), or the tuple.
        """
        if self.num_inference_steps is None or self.fallback_reason() is not None:
            return super().step(
                guided_output(model_output, _guidance),
                timestep,
                sample,
                generator,
                variance_noise,
                return_dict,
            )
        index = self._advance()
        sigma, sigma_next = self._sigma_pair(index)
        # the sample is VP-scaled, x = α_t (x0 + σ ε) with α_t = 1/√(1 + σ²)
        scales = (math.sqrt(1 + sigma**2), 1 / math.sqrt(1 + sigma_next**2))
        options = guidance_options(_guidance)
        sigma_prev = 1.0
        if not self._first_order(index):
            plan = cast(list[float], self._plan)  # built by _sigma_pair
            options["second"], sigma_prev = self.model_outputs[-1], plan[index - 1]
        prev, denoised = loop_step(  # (x', D)
            "dpmpp_2m",
            sample,
            model_output,
            (sigma, sigma_next, sigma_prev),
            scales=scales,
            prediction=self._prediction(),
            **options,
        )
        self.model_outputs = [*self.model_outputs[1:], denoised]
        self.lower_order_nums = min(self.lower_order_nums + 1, self.config.solver_order)
        return output(SchedulerOutput, return_dict, prev.to(model_output.dtype))


class FlowMatchEulerDiscreteScheduler(_SigmaScheduler, diffusers.FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler with a fused `step`: x' = x + (σ_next − σ) v,
    the Euler kernel's "eps" step (for x = (1 − σ) x0 + σ ε and v = ε − x0, the velocity is the
    derivative dx/dσ as ε is in the σ form)."""

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        if self.config.stochastic_sampling:
            return "stochastic_sampling=True"
        return None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: Optional[torch.Generator] = None,
        per_token_timesteps: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        *,
        _guidance: Guidance = None,
    ) -> Union[FlowMatchEulerDiscreteSchedulerOutput, tuple]:
        """One fused Euler step of the flow (upstream's arguments and outputs).

        Args:
            model_output: the model's output at `sample` (its prediction_type).
            timestep: the step's timestep (not read: the step counter names the step).
            sample: the current sample x at σ.
            s_churn: upstream's (unused by its deterministic step).
            s_tmin: upstream's (unused by its deterministic step).
            s_tmax: upstream's (unused by its deterministic step).
            s_noise: upstream's (unused by its deterministic step).
            generator: upstream's (its stochastic_sampling).
            per_token_timesteps: per-token σ (upstream's step runs them).
            return_dict: return FlowMatchEulerDiscreteSchedulerOutput (True) or a tuple.
            _guidance: (uncond, g): classifier-free guidance uncond + g (model_output − uncond)
                (Ho & Salimans, 2022) inside the step (guided_step's).

        Returns:
            FlowMatchEulerDiscreteSchedulerOutput(prev_sample), or the tuple.
        """
        index = self._next_index()
        sigma, sigma_next = self._sigma_pair(index)
        if self.fallback_reason() is not None or per_token_timesteps is not None or sigma == 0:
            return super().step(
                guided_output(model_output, _guidance),
                timestep,
                sample,
                s_churn,
                s_tmin,
                s_tmax,
                s_noise,
                generator,
                per_token_timesteps,
                return_dict,
            )
        self._advance()
        prev, _ = euler_launch(
            sample,
            model_output,
            sigma,
            sigma_next,
            prediction="eps",
            guidance=_guidance,
            denoised=False,
        )
        return output(
            FlowMatchEulerDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
        )
