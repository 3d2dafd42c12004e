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

$(OLD_TRITON_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(OLD_TRITON_VENV)
	$(OLD_TRITON_VENV)/bin/pip install --quiet --no-deps $(OLD_TRITON)
	$(OLD_TRITON_VENV)/bin/python -c "import site; \
	  open(site.getsitepackages()[0] + '/borrowed.pth', 'w').write( \
	    'import site; site.addsitedir(%r)\n' % '$(abspath $(VENV))/lib/python%s/site-packages' \
	    % '.'.join(map(str, __import__('sys').version_info[:2])))"
	touch $@

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet $(INTEGRATIONS)
	$(BIN)/pip install --quiet --no-deps $(INTEGRATIONS_NO_DEPS)
	touch $@

DEMO_RUN := runs/demo-vae
DEMO_PIXELCNN := runs/demo-pixelcnn
DEMO_NSF := runs/demo-nsf
DEMO_REALNVP := runs/demo-realnvp
DEMO_DDPM := runs/demo-ddpm
DEMO_GAN := runs/demo-gan

demo: setup
	$(BIN)/gdm-engine info
	$(BIN)/gdm-engine validate --smoke
	$(BIN)/gdm-engine bench --quick --ops-only --no-compile
	$(BIN)/gdm-engine compile --arch sm_90 --op actnorm
	rm -rf $(DEMO_RUN)
	$(BIN)/gdm-engine train vae --data digits --steps 1000 --eval-every 500 --out $(DEMO_RUN)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_RUN)/best.pt --out $(DEMO_RUN)/samples.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_RUN)/best.pt --json $(DEMO_RUN)/eval.json
	rm -rf $(DEMO_PIXELCNN)
	$(BIN)/gdm-engine train pixelcnn --data digits --steps 150 --eval-every 150 --set channels=32 --out $(DEMO_PIXELCNN)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_PIXELCNN)/best.pt --out $(DEMO_PIXELCNN)/samples.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_PIXELCNN)/best.pt --json $(DEMO_PIXELCNN)/eval.json
	rm -rf $(DEMO_NSF)
	$(BIN)/gdm-engine train nsf --data 8gaussians --steps 400 --batch-size 256 --eval-every 400 --out $(DEMO_NSF)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_NSF)/best.pt --n 2000 --out $(DEMO_NSF)/samples.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_NSF)/best.pt --json $(DEMO_NSF)/eval.json
	rm -rf $(DEMO_REALNVP)
	$(BIN)/gdm-engine train realnvp --data digits --steps 300 --batch-size 64 --eval-every 300 --weight-decay 0.05 --set dropout=0.3 --out $(DEMO_REALNVP)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_REALNVP)/best.pt --temperature 0.8 --out $(DEMO_REALNVP)/samples.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_REALNVP)/best.pt --iwae-samples 100 --json $(DEMO_REALNVP)/eval.json
	rm -rf $(DEMO_DDPM)
	$(BIN)/gdm-engine train ddpm --data digits --steps 200 --eval-every 200 --set bound_timesteps=20 --out $(DEMO_DDPM)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_DDPM)/best.pt --label 3 --guidance 2.0 --n 16 --steps 20 --out $(DEMO_DDPM)/threes.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_DDPM)/best.pt --bound-timesteps 20 --json $(DEMO_DDPM)/eval.json
	rm -rf $(DEMO_GAN)
	$(BIN)/gdm-engine train gan --data digits --steps 400 --eval-every 400 --set width=32 --out $(DEMO_GAN)
	$(BIN)/gdm-engine sample --checkpoint $(DEMO_GAN)/best.pt --out $(DEMO_GAN)/samples.png
	$(BIN)/gdm-engine eval --checkpoint $(DEMO_GAN)/best.pt --json $(DEMO_GAN)/eval.json

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
