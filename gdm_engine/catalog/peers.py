"""The peer libraries: adapters that run an op's case on another library's implementation,
where it is installed, for `gdm-engine bench`, `bench --host` and bench/ to time against. Each
takes a Case and returns a callable, or None where the peer cannot run the case (e.g. on this
device). OpSpec.peers names them."""

import torch

# causal_conv1d


def _dao_causal_conv1d(case):
    """The CUDA kernel of the `causal-conv1d` package (depthwise, K <= 4), where installed."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    x, w, b = case.args
    kw = case.kwargs
    depthwise = kw["groups"] == x.shape[1] == w.shape[0]
    if (
        x.device.type != "cuda"
        or not depthwise
        or kw["dilation"] != 1
        or w.shape[2] > 4
        or kw["activation"] is not None
    ):
        return None
    return lambda: causal_conv1d_fn(x, w[:, 0], b)


# rq_spline


def _nflows_rq_spline(case):
    """nflows' `unconstrained_rational_quadratic_spline` (tails="linear"), where installed and
    the case is in nflows' parameterisation: the same function, with boundary derivatives 1 up
    to rounding of its softplus constant."""
    kw = dict(case.kwargs)
    if kw.pop("parameterisation", "nflows") != "nflows":
        return None
    try:
        from nflows.transforms.splines import rational_quadratic as nflows_splines
    except ImportError:
        return None
    x, widths, heights, derivatives = case.args
    reverse, box = kw.pop("reverse"), kw.pop("box", None)
    ends = derivatives.shape[-1] == widths.shape[-1] + 1
    if box is not None and ends:  # tails=None
        left, right, bottom, top = box
        return lambda: nflows_splines.rational_quadratic_spline(
            x,
            widths,
            heights,
            derivatives,
            inverse=reverse,
            left=left,
            right=right,
            bottom=bottom,
            top=top,
            **kw,
        )
    if box is not None or ends:
        return None
    return lambda: nflows_splines.unconstrained_rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=reverse, tails="linear", **kw
    )


def _zuko_rq_spline(case):
    """zuko's `MonotonicRQSTransform` (forward: call_and_ladj; inverse: inv, then its ladj),
    where installed and the case is in zuko's parameterisation."""
    kw = case.kwargs
    if kw.get("parameterisation") != "zuko":
        return None
    try:
        from zuko.transforms import MonotonicRQSTransform
    except ImportError:
        return None
    x, widths, heights, derivatives = case.args

    def run():
        spline = MonotonicRQSTransform(
            widths, heights, derivatives, bound=kw["tail_bound"], slope=kw.get("slope", 1e-3)
        )
        return spline.inv.call_and_ladj(x) if kw["reverse"] else spline.call_and_ladj(x)

    return run


# diffusion

_DIFFUSERS_PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def _diffusers_step(scheduler_name, steps=None):
    """A peer running diffusers' `<scheduler_name>.step` on a case of the same size, where
    diffusers is installed (a benchmark-only peer): at t = 500 of its own linear schedule, so the
    values differ while the work is the same. Classifier-free guidance is the separate
    u + w·(c − u) that diffusers' pipelines compute before the step. Cases with per-example
    schedule values, clipping or thresholding have no diffusers counterpart (None)."""

    def peer(case):
        try:
            import diffusers
        except ImportError:
            return None
        x, m, a, _, _, uncond = case.args
        kw = dict(case.kwargs)
        w = kw.pop("guidance_scale", 1.0)
        if isinstance(a, torch.Tensor) or {"clip", "threshold"} & set(kw):
            return None
        options = {
            "prediction_type": _DIFFUSERS_PREDICTIONS[kw.pop("prediction", "eps")],
            "clip_sample": False,
        }
        if "variance" in kw:
            options["variance_type"] = kw.pop("variance")
        scheduler = getattr(diffusers, scheduler_name)(num_train_timesteps=1000, **options)
        if steps:
            scheduler.set_timesteps(steps)
        step_options = {"eta": kw.pop("eta")} if "eta" in kw else {}

        def run():
            output = m if uncond is None else uncond + w * (m - uncond)
            return scheduler.step(output, 500, x, **step_options).prev_sample

        return run

    return peer
