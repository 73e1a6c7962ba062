# `make train` and `make test` do all the set-up: they create .venv and install the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install train baseline fashion lint test test-fast bench gpu-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster,sweep]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default data (the bundled digits): the RepFusion chain
# (DDPM teacher -> stage-1 distillation -> stage-2 fine-tuning, beside the from-scratch baseline).
# Independent runs go side by side, one per core, each forked from the chain's process (tasks.studies).
train: $(STAMP)
	$(PY) -m tasks.chain repfusion_digits

# The supervised baseline alone.
baseline: $(STAMP)
	$(PY) train.py experiment=classify_digits

# Fashion-MNIST, the second real data set: Debian's package puts the four IDX files in
# /usr/share/datasets/fashion-mnist/ (data=fashion_mnist reads them from there).
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
fashion:
	@if [ -f $(FASHION) ]; then echo "Fashion-MNIST is installed in $(dir $(FASHION))"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "No apt-get here. Download the four .gz files from" \
	  "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ and set data.root=<folder>." >&2; exit 2; fi

# ruff, configured in pyproject.toml: the lint rules and the format check (CI runs it before the tests).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Two pytest-xdist workers with one thread each (tests/conftest.py); each worker's end-to-end runs fork
# from one fork server that imported the libraries once (KT_TEST_FRESH=1: fresh interpreters). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run

# The GPU route's smoke mode: the same steps as on a lent GPU, on the CPU with tiny subsets.
gpu-smoke: $(STAMP)
	rm -rf logs/gpu_smoke
	$(PY) -m benchmarks.gpu.studies --smoke --out logs/gpu_smoke/out

clean:
	rm -rf logs outputs multirun .pytest_cache
