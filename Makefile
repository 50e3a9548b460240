# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-slow lint data clean experiments

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, with pip, so the pinned local wheels are used
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian when possible; elsewhere `resnets` downloads it with torchvision on first use.
data:
	@if [ -d $(FMNIST_DEB) ]; then echo "Fashion-MNIST: $(FMNIST_DEB)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) \
		|| echo "apt-get could not install dataset-fashion-mnist: resnets will download it"; \
	else echo "Fashion-MNIST not installed: resnets will download it with torchvision"; fi

demo: $(VENV)/.installed data
	$(VENV)/bin/resnets train --out runs/demo --overwrite
	@echo "Report: runs/demo/report.md"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

# one worker per core (each test uses one thread); a file's tests stay together so its module-scoped
# fixtures (trained models) are built once
test: $(VENV)/.installed lint
	$(VENV)/bin/pytest -q -n auto --dist loadfile

# the slow-marked tests only (full data sets, torch.compile): `make test` leaves them out
test-slow: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m slow

# Every experiment at the cpu budget (about 30 minutes each on 2 cores, 3 seeds), each report rebuilt in
# docs/experiments/smoke/NAME (smoke runs: the full-scale studies are `resnets study`). CIFAR-10 is found
# through RESNETS_DATA (a folder holding cifar10/), e.g.
# `make experiments RESNETS_DATA=/data`; EXPERIMENT_FLAGS adds options (e.g. --threads 1 on a busy machine).
EXPERIMENTS := gradients degradation responses resolution complexity variants shortcuts
EXPERIMENT_FLAGS ?=
experiments: $(VENV)/.installed
	for name in $(EXPERIMENTS); do \
		$(VENV)/bin/resnets experiment $$name --budget cpu --out docs/experiments/smoke/$$name $(EXPERIMENT_FLAGS) || exit 1; \
	done

clean:
	rm -rf $(VENV) runs build src/*.egg-info

# The GPU suite (docs/gpu.md), on a machine with CUDA and torch >= 2.11 preinstalled: no venv, no install.
.PHONY: gpu-suite
gpu-suite:
	PYTHONPATH=src $(PYTHON) scripts/gpu_suite.py --out runs/gpu-suite \
		--data-root gpu_data/fashion-mnist --cifar-root gpu_data/cifar10
