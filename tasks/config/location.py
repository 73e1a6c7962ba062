"""Where the checkout's entry scripts and Hydra configs are: ROOT holds train.py and eval.py,
CONF_DIR is conf/ (the primary config folder of every command)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
