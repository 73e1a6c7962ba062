"""Ratio benchmarks: the framework against plain PyTorch doing the same work, measured
side by side in one run. `python -m benchmarks.run` runs them all."""
