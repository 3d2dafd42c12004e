# `make demo` and `make test` set up .venv themselves. On a CPU-only machine torch==2.13.0
# resolves to the CPU build where one is on pip's path (this project's CI machines keep it in
# pip's find-links); elsewhere choose the build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
#   make test TORCH=torch            # the newest CUDA build, on a GPU machine
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# the upstream libraries of gdm_engine.integrations, so that their tests run rather than skip;
# without the dependencies that the imported modules never use: nflows' tensorboard and
# matplotlib, k-diffusion's CLIP, clean-fid and torchvision (its samplers need torchsde, scipy)
INTEGRATIONS := zuko==1.6.0 scipy safetensors
INTEGRATIONS_NO_DEPS := nflows==0.14 normflows==1.7.3 k-diffusion==0.1.1.post1 torchsde==0.2.6 \
	trampoline==0.1.2 torchdiffeq==0.2.5

# The oldest Triton the kernels support, in a second environment that borrows everything else
# from $(VENV): the kernels' tests run there too. Its interpreter turns scalar arguments into
# one-element arrays, which NumPy 2.4 no longer converts to Python numbers: NumPy 2.3 there.
OLD_TRITON := triton==3.6.0 numpy==2.3.5
OLD_TRITON_VENV := .venv-triton3.6
# the kernels against their references, every op, at fp32, contiguous and strided, with poisoned
# outputs: the subset of tests/test_catalog.py that exercises the kernels' code, kept small
OLD_TRITON_TESTS := tests/test_catalog.py -k "float32 or strided or poisoned"

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# torch and the package alone: what the demo needs
$(VENV)/.package: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

# and what the tests need: the test tools and the integrations' libraries
$(VENV)/.installed: $(VENV)/.package
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet $(INTEGRATIONS)
	$(BIN)/pip install --quiet --no-deps $(INTEGRATIONS_NO_DEPS)
	touch $@

$(OLD_TRITON_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(OLD_TRITON_VENV)
	$(OLD_TRITON_VENV)/bin/pip install --quiet --no-deps $(OLD_TRITON)
	$(OLD_TRITON_VENV)/bin/python -c "import site; \
	  open(site.getsitepackages()[0] + '/borrowed.pth', 'w').write( \
	    'import site; site.addsitedir(%r)\n' % '$(abspath $(VENV))/lib/python%s/site-packages' \
	    % '.'.join(map(str, __import__('sys').version_info[:2])))"
	touch $@

# compile first, in a process of its own: the demo's other commands run the kernels through the
# interpreter on a machine without a GPU, and compile builds for real GPUs
demo: $(VENV)/.package
	$(BIN)/gdm-engine compile --arch sm_90 --op actnorm
	rm -rf runs/demo
	$(BIN)/gdm-engine demo --out runs/demo

test: setup $(OLD_TRITON_VENV)/.installed
	$(BIN)/ruff check gdm_engine kernels
	$(BIN)/ruff format --check gdm_engine kernels
	$(BIN)/mypy
	$(BIN)/python -m pytest tests bench --benchmark-disable
	TRITON_INTERPRET=1 $(OLD_TRITON_VENV)/bin/python -m pytest $(OLD_TRITON_TESTS)

bench: setup
	$(BIN)/python -m pytest bench --benchmark-json bench-results.json

clean:
	rm -rf $(VENV) $(OLD_TRITON_VENV) build *.egg-info runs
