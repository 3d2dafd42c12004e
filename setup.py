import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def version():
    """gdm_engine.__version__, read from its one place without importing the package (which
    needs torch)."""
    source = (HERE / "gdm_engine" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', source, re.MULTILINE).group(1)


setup(
    name="gdm-engine",
    version=version(),
    description="Triton kernels for deep generative models behind a thin PyTorch engine",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    keywords=["triton", "pytorch", "generative models", "normalizing flows", "diffusion",
              "pixelcnn", "wavenet", "kernels"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Environment :: GPU :: NVIDIA CUDA",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    python_requires=">=3.10",
    packages=find_packages(include=["gdm_engine", "gdm_engine.*"]) + ["gdm_engine.kernels"],
    # The kernels live in the top-level kernels/ folder but install under the engine's name, so
    # they cannot clash with any other top-level "kernels" package.
    package_dir={"gdm_engine.kernels": "kernels"},
    package_data={"gdm_engine": ["py.typed"]},  # PEP 561: the package ships its type hints
    install_requires=[
        # make test runs the kernels on triton 3.9 and 3.6 with torch 2.13 (see the README)
        "torch>=2.11",
        "triton>=3.6,<3.10; platform_system == 'Linux'",
        "numpy",
        "tqdm",
        "scikit-learn",  # the bundled 8x8 digits
        "pillow",        # PNG sample grids and image folders
        "matplotlib",    # scatter plots of 2-D samples
        "constriction>=0.4,<0.6",  # the ANS entropy coder of gdm_engine.compression
    ],
    # the drop-ins' libraries (gdm_engine.integrations): each integration imports its own
    extras_require={
        "diffusers": ["diffusers"],
        "k-diffusion": [],  # its samplers' signatures need nothing of k-diffusion itself
        "zuko": ["zuko>=1.1,<2"],
        "nflows": ["nflows==0.14"],
        # ruff and mypy pinned: make test checks the tree is clean by their rules
        "test": [
            "pytest", "pytest-benchmark", "hypothesis", "diffusers", "ruff==0.17.6", "mypy==2.4.1",
        ],
    },
    entry_points={"console_scripts": ["gdm-engine = gdm_engine.cli:main"]},
)
