"""diffusion: the fused steps of the samplers (DDPM, DDIM, Euler, Heun, DPM-Solver++(2M),
Langevin) and the training side (q_sample, the loss).

Each op is a `torch.library.custom_op` with a fake implementation (the steps have no autograd;
q_sample and the loss do). The public functions validate their inputs on the host and call the
registered op, which launches exactly one Triton kernel (kernels/diffusion.py) or runs the
PyTorch reference (gdm_engine.backend). No device op besides the kernel and no read-back: the
kernel forms every coefficient from the schedule values itself — floats as float64 kernel
arguments, per-example tensors read once per row. Dynamic thresholding is the exception: its
per-example quantile is computed in torch (two kthvalue passes), a budget the catalog declares.
"""

# the kernels' seeds, where the integrations draw them (gdm_engine.integrations.diffusers.ddpm)
from gdm_engine._random import noise_seed

from .coefficients import schedule_arguments
from .loop import loop_step

# the torch.library registrations run once, when steps and training are first imported
from .steps import (
    VARIANCES,
    ddim_library_inputs,
    ddim_library_op,
    ddim_step,
    ddpm_library_inputs,
    ddpm_library_op,
    ddpm_step,
    dpmpp_2m_library_inputs,
    dpmpp_2m_library_op,
    dpmpp_2m_step,
    euler_library_inputs,
    euler_library_op,
    euler_step,
    heun_library_inputs,
    heun_library_op,
    heun_step,
    langevin_library_inputs,
    langevin_library_op,
    langevin_step,
)
from .training import (
    diffusion_loss,
    diffusion_loss_library_inputs,
    diffusion_loss_library_op,
    q_sample,
    q_sample_library_inputs,
    q_sample_library_op,
)

__all__ = [
    "VARIANCES",
    "ddim_library_inputs",
    "ddim_library_op",
    "ddim_step",
    "ddpm_library_inputs",
    "ddpm_library_op",
    "ddpm_step",
    "diffusion_loss",
    "diffusion_loss_library_inputs",
    "diffusion_loss_library_op",
    "dpmpp_2m_library_inputs",
    "dpmpp_2m_library_op",
    "dpmpp_2m_step",
    "euler_library_inputs",
    "euler_library_op",
    "euler_step",
    "heun_library_inputs",
    "heun_library_op",
    "heun_step",
    "langevin_library_inputs",
    "langevin_library_op",
    "langevin_step",
    "loop_step",
    "noise_seed",
    "q_sample",
    "q_sample_library_inputs",
    "q_sample_library_op",
    "schedule_arguments",
]
