"""What the diffusion ops share to run: the step kernel on (N, D) views (`_step`, dynamic
thresholding's quantile included), the reference's result in the kernel's layout, the fake
of a step that returns one tensor, and the kernel's seed."""

import torch

from gdm_engine.reference import diffusion as ref


def _kernels():
    from gdm_engine.kernels import diffusion as kernels

    return kernels


def _rows(t):
    """(N, D) view (or copy, where no view exists) of an (N, ...) tensor; None stays None."""
    return t.reshape(t.shape[0], t.shape[1:].numel()) if t is not None else None


def _reference_output(out, like):
    """The reference's result in the kernel's layout and dtype: contiguous, like x (the
    reference computes in at least fp32 where the schedule is a float or an fp32 tensor)."""
    return out.to(like.dtype).contiguous()


def _threshold_scale(kind, x, m, values, uncond, threshold, **options):
    """Dynamic thresholding's per-example s (Saharia et al., 2022), from the model's x0 that the
    step kernel writes: the quantile is torch's (kthvalue), the op's declared extra device work."""
    x0 = _kernels().diffusion_step(
        kind, _rows(x), _rows(m), values, uncond=_rows(uncond), output_x0=True, **options
    )
    return ref.threshold_scale(x0, threshold)


def _step(
    kind,
    x,
    m,
    values,
    *,
    noise=None,
    uncond=None,
    second=None,
    uncond_second=None,
    second_output=False,
    threshold=None,
    **options,
):
    """The step kernel on (N, D) views; outputs shaped like x."""
    scale = None
    if threshold is not None:
        scale = _threshold_scale(
            kind,
            x,
            m,
            values,
            uncond,
            threshold,
            prediction=options["prediction"],
            guidance_scale=options["guidance_scale"],
            clip=options["clip"],
        )
    out = _kernels().diffusion_step(
        kind,
        _rows(x),
        _rows(m),
        values,
        noise=_rows(noise),
        uncond=_rows(uncond),
        second=_rows(second),
        uncond_second=_rows(uncond_second),
        threshold_scale=scale,
        second_output=second_output,
        **options,
    )
    if second_output:
        return tuple(t.view(x.shape) for t in out)
    return out.view(x.shape)


def _shaped_like_input(x, *args, **kwargs):
    """The fake implementation of a step that returns one tensor shaped like its first input."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _seed(draw, seed):
    """The kernel's seed: None draws no noise."""
    return seed if draw else None
