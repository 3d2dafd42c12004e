"""The σ-form schedulers: EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete,
DPMSolverMultistep (DPM-Solver++(2M)) and FlowMatchEulerDiscrete. Each step is one fused launch
at the plan's row that upstream's own step counter (`_step_index`) names; where upstream finds
its first index by a timestep lookup (nonzero().item(), diffusers issue 3950), the counter
starts at the begin index (0, or set_begin_index's)."""

import math

from gdm_engine.ops.diffusion import loop_step

from ._fused import (
    PREDICTION_TYPES,
    FusedScheduler,
    diffusers,
    draw_noise,
    euler_launch,
    guidance_options,
    guided_output,
    output,
    unsupported,
)

_outputs = diffusers.schedulers


class _SigmaScheduler(FusedScheduler):
    """Plans from the CPU sigmas (upstream keeps them there, or set_timesteps builds them there
    here); `_advance` moves upstream's counter as its step would."""

    def _plan_rows(self):
        return self.sigmas.double().tolist()

    def _advance(self):
        index = self._next_index()
        self._step_index = index + 1
        return index

    def fallback_reason(self):
        if self.config.prediction_type not in PREDICTION_TYPES:
            return unsupported("prediction_type", self.config.prediction_type)
        return None

    def _prediction(self):
        return PREDICTION_TYPES[self.config.prediction_type]

    def _sigma_pair(self, index):
        self._row(0)
        return self._plan[index], self._plan[index + 1]


class EulerDiscreteScheduler(_SigmaScheduler, diffusers.EulerDiscreteScheduler):
    """diffusers' EulerDiscreteScheduler with a fused `step` (Karras et al., 2022, Alg. 1).
    Steps with churn (γ > 0: s_churn > 0 and s_tmin <= σ <= s_tmax) run upstream's step:
    upstream lifts x before it forms pred_original_sample, which one launch cannot return."""

    def step(
        self,
        model_output,
        timestep,
        sample,
        s_churn=0.0,
        s_tmin=0.0,
        s_tmax=float("inf"),
        s_noise=1.0,
        generator=None,
        return_dict=True,
        *,
        _guidance=None,
    ):
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
            _outputs.scheduling_euler_discrete.EulerDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
            x0,
        )


class EulerAncestralDiscreteScheduler(_SigmaScheduler, diffusers.EulerAncestralDiscreteScheduler):
    """diffusers' EulerAncestralDiscreteScheduler with a fused `step`: the Euler step to σ_down
    plus σ_up·z (k-diffusion's sample_euler_ancestral), z upstream's draw from `generator`."""

    def fallback_reason(self):
        if self.config.prediction_type == "sample":
            return "prediction_type='sample' (upstream raises NotImplementedError)"
        return super().fallback_reason()

    def step(
        self, model_output, timestep, sample, generator=None, return_dict=True, *, _guidance=None
    ):
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
            _outputs.scheduling_euler_ancestral_discrete.EulerAncestralDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
            x0,
        )


class HeunDiscreteScheduler(_SigmaScheduler, diffusers.HeunDiscreteScheduler):
    """diffusers' HeunDiscreteScheduler with a fused `step`: its first call (an Euler step to
    the next σ) one launch; its second, Heun's correction (Karras et al., 2022, Alg. 2), one
    launch of the Heun kernel from the first call's sample and output, plus one for its
    pred_original_sample (D at the Euler point)."""

    def fallback_reason(self):
        if self.config.clip_sample:
            return "clip_sample=True (the Heun kernel does not clamp)"
        return super().fallback_reason()

    def step(self, model_output, timestep, sample, return_dict=True, *, _guidance=None):
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
            first_output, first_guidance = self._first
            options = guidance_options(first_guidance)
            if _guidance is not None:
                options["uncond_second"] = _guidance[0]
            prev = loop_step(
                "heun",
                self.sample,
                first_output,
                (sigma, sigma_next),
                second=model_output,
                prediction=prediction,
                **options,
            )
            _, x0 = euler_launch(
                sample,
                model_output,
                sigma_next,
                sigma_next,
                prediction=prediction,
                guidance=_guidance,
            )
            self.sample, self.dt, self._first = None, None, None
        return output(
            _outputs.scheduling_heun_discrete.HeunDiscreteSchedulerOutput, return_dict, prev, x0
        )


class DPMSolverMultistepScheduler(_SigmaScheduler, diffusers.DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistepScheduler with a fused `step` for DPM-Solver++(2M) (Lu et
    al., 2022, Alg. 2; solver_type "midpoint"): the previous denoised estimate kept in
    `model_outputs` as upstream keeps it; first order on the first step and where upstream's
    lower_order_final / euler_at_final / final_sigmas_type="zero" ask for it."""

    def fallback_reason(self):
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

    def _first_order(self, index):
        steps = len(self.timesteps)
        final = index == steps - 1 and (
            self.config.euler_at_final
            or self.config.final_sigmas_type == "zero"
            or (self.config.lower_order_final and steps < 15)
        )
        return self.lower_order_nums < 1 or final

    def step(
        self,
        model_output,
        timestep,
        sample,
        generator=None,
        variance_noise=None,
        return_dict=True,
        *,
        _guidance=None,
    ):
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
            options["second"], sigma_prev = self.model_outputs[-1], self._plan[index - 1]
        prev, denoised = loop_step(
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
        return output(
            _outputs.scheduling_utils.SchedulerOutput, return_dict, prev.to(model_output.dtype)
        )


class FlowMatchEulerDiscreteScheduler(_SigmaScheduler, diffusers.FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler with a fused `step`: x' = x + (σ_next − σ) v,
    the Euler kernel's "eps" step (for x = (1 − σ) x0 + σ ε and v = ε − x0, the velocity is the
    derivative dx/dσ as ε is in the σ form)."""

    def fallback_reason(self):
        if self.config.stochastic_sampling:
            return "stochastic_sampling=True"
        return None

    def step(
        self,
        model_output,
        timestep,
        sample,
        s_churn=0.0,
        s_tmin=0.0,
        s_tmax=float("inf"),
        s_noise=1.0,
        generator=None,
        per_token_timesteps=None,
        return_dict=True,
        *,
        _guidance=None,
    ):
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
            _outputs.scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteSchedulerOutput,
            return_dict,
            prev.to(model_output.dtype),
        )
