"""Drop-ins for the libraries people already use: their APIs, the engine's fused ops underneath.

- `gdm_engine.integrations.diffusers`: diffusers' schedulers (subclasses), `accelerate(pipe)`,
  `guided_step`.
- `gdm_engine.integrations.k_diffusion`: k-diffusion's samplers, same signatures and callbacks.
- `gdm_engine.integrations.zuko`: zuko's monotonic rational-quadratic spline transform and NSF.
- `gdm_engine.integrations.nflows`: nflows' spline functions and `patch()`.

Each module imports its library when it is imported itself, never before: `import gdm_engine`
needs none of them. Without the library, the import raises an ImportError naming the extra to
install (`pip install "gdm-engine[diffusers]"`).
"""

import importlib
from collections.abc import Callable
from types import ModuleType

# what each integration's benchmark_pairs(size) gives, for the speed table (.speed): (name, case,
# upstream call, drop-in call), the calls taking no arguments
BenchmarkPair = tuple[str, str, Callable[[], object], Callable[[], object]]


def require(module: str, extra: str) -> ModuleType:
    """The imported `module` of an integration's library, or an ImportError naming `extra`.

    Args:
        module: the dotted name of the library's module ("zuko.transforms").
        extra: the gdm-engine extra that installs the library ("zuko").

    Returns:
        The module.

    Raises:
        ImportError: the module cannot be imported; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"gdm_engine.integrations.{extra.replace('-', '_')} needs the "
            f'{extra} library: pip install "gdm-engine[{extra}]" '
            f"({error})"
        ) from error
