"""The shared task layer: data, timm backbones, heads, losses, metrics and the
supervised LightningModules every method trains for, plus the few helpers every
method needs (frozen teacher, export, plots, run pipeline)."""

from tasks.config import resolvers as _resolvers  # noqa: F401  (registers OmegaConf resolvers used by conf/)
