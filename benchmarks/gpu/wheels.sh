#!/usr/bin/env bash
# Fill .whl/ (git-ignored; carried to the GPU machine) with the pure-Python packages that the
# lent H200's Python 3.12 lacks: Hydra, OmegaConf, antlr4 (sdist only: built into a wheel here),
# diffusers and importlib_metadata. The versions are the ones this project's venv runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
mkdir -p .whl
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
for pkg in hydra-core omegaconf diffusers importlib_metadata; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d .whl "$pkg==$(version "$pkg")"
done
"$PY" -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
# The data travels too (the device has no network): the four IDX files, in data.root's layout.
mkdir -p data/fashion-mnist
cp -n /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/ 2>/dev/null || {
  echo "Fashion-MNIST is not installed here: run 'make fashion' first" >&2; exit 2; }
ls -la .whl data/fashion-mnist
