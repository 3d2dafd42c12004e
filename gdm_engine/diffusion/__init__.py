"""The sampler package's old name: it is `gdm_engine.sampling` now ("diffusion" names the step
ops' family: kernels/, reference/ and ops/diffusion/). Importing this warns; its names and
submodules are sampling's, for one release."""

import sys
import warnings

from gdm_engine import sampling
from gdm_engine.sampling import samplers, schedules

warnings.warn(
    "gdm_engine.diffusion is now gdm_engine.sampling; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[f"{__name__}.samplers"] = samplers
sys.modules[f"{__name__}.schedules"] = schedules


def __getattr__(name):
    return getattr(sampling, name)
