"""The public API is typed and documented: every public function, class and method of ops, nn,
models, sampling, train, metrics and integrations annotates its parameters and result and has a
docstring of its own; an exported function that takes arguments says them under "Args:", one that
returns says it under "Returns:" (Google style, the sections a reader and an IDE look for)."""

import importlib
import importlib.resources
import inspect

import pytest

# the modules whose names users import; a package's public names are its __all__
MODULES = [
    "gdm_engine.ops",
    "gdm_engine.ops.outputs",
    "gdm_engine.nn",
    "gdm_engine.models",
    "gdm_engine.sampling",
    "gdm_engine.sampling.schedules",
    "gdm_engine.train",
    "gdm_engine.metrics",
    "gdm_engine.compression",
    "gdm_engine.anomaly",
    "gdm_engine.inpainting",
    "gdm_engine.representations",
    "gdm_engine.integrations.diffusers",
    "gdm_engine.integrations.k_diffusion",
    "gdm_engine.integrations.zuko",
    "gdm_engine.integrations.nflows",
]


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:  # a module without __all__: what it defines itself
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
            and (inspect.isfunction(value) or inspect.isclass(value))
        ]
    return names


def _callables(module):
    """(qualified name, function) of each public function, and each public class's own methods
    (and __init__), that the module exports."""
    for name in _public_names(module):
        value = getattr(module, name)
        if inspect.isfunction(value):
            yield name, value
        elif inspect.isclass(value):
            for attribute, member in vars(value).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                function = (
                    member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                )
                if isinstance(member, property):
                    function = member.fget
                if inspect.isfunction(function):
                    yield f"{name}.{attribute}", function


def _missing_annotations(function):
    signature = inspect.signature(function)
    missing = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.name not in ("self", "cls") and parameter.annotation is inspect.Parameter.empty
    ]
    if function.__name__ != "__init__" and signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("module_name", MODULES)
def test_public_functions_and_methods_are_annotated(module_name):
    module = importlib.import_module(module_name)
    unannotated = {
        name: missing
        for name, function in _callables(module)
        if (missing := _missing_annotations(function))
    }
    assert not unannotated, f"{module_name}: {unannotated}"


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_docstrings_with_their_sections(module_name):
    module = importlib.import_module(module_name)
    undocumented = []
    for name in _public_names(module):
        value = getattr(module, name)
        # __doc__, not inspect.getdoc: a class or method must have its own, not its parent's
        if (inspect.isfunction(value) or inspect.isclass(value)) and not value.__doc__:
            undocumented.append(name)
    for name, function in _callables(module):
        if function.__name__ != "__init__" and not function.__doc__:
            undocumented.append(name)
    assert not undocumented, f"{module_name}: no docstring for {undocumented}"
    unsectioned = []
    for name in _public_names(module):
        function = getattr(module, name)
        if not inspect.isfunction(function):
            continue
        doc = inspect.getdoc(function) or ""
        signature = inspect.signature(function)
        takes = any(p not in ("self", "cls") for p in signature.parameters)
        returns = signature.return_annotation not in (None, "None", inspect.Signature.empty)
        if (takes and "Args:" not in doc) or (returns and "Returns:" not in doc):
            unsectioned.append(name)
    assert not unsectioned, f"{module_name}: no Args:/Returns: section in {unsectioned}"


def test_the_package_says_it_is_typed():
    # PEP 561: type checkers read an installed package's hints only where it ships py.typed
    assert importlib.resources.files("gdm_engine").joinpath("py.typed").is_file()
