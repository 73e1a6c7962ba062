# `make train` and `make test` do all the set-up: they create .venv and install the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install train baseline test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster,sweep]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default data (the bundled digits): the RepFusion chain
# (DDPM teacher -> stage-1 distillation -> stage-2 fine-tuning, beside the from-scratch baseline).
train: $(STAMP)
	$(PY) -m tasks.chain repfusion_digits

# The supervised baseline alone.
baseline: $(STAMP)
	$(PY) train.py experiment=classify_digits

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf logs outputs multirun .pytest_cache
