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


def require(module, extra):
    """The imported `module` of an integration's library, or an ImportError naming `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"gdm_engine.integrations.{extra.replace('-', '_')} needs the "
            f'{extra} library: pip install "gdm-engine[{extra}]" '
            f"({error})"
        ) from error
