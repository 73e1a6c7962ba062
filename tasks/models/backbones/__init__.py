"""timm students: creation by name (with the small-input stem), feature access,
weight loading from exports or checkpoints, and export in timm's Hub layout
(config.json + model.safetensors; `import tasks.models.backbones` registers the `*_smallstem`
variants so that `timm.create_model("local-dir:<export>", pretrained=True)` rebuilds them)."""

import timm as _timm

from tasks.models.backbones.export import export_timm
from tasks.models.backbones.factory import create_backbone, timm_name
from tasks.models.backbones.small_stem import apply_small_stem, small_stem_name
from tasks.models.backbones.weights import count_parameters, export_backbone, load_backbone_weights, load_exported

# Register the `_smallstem` variant of the common CNN students, so that an export
# reloads with plain `timm.create_model` after `import tasks.models.backbones`.
for _arch in _timm.list_models(
    ["resnet*", "resnext*", "mobilenetv2*", "mobilenetv3*", "efficientnet_b*", "regnet[xy]_0*"]
):
    if not _arch.endswith("_smallstem"):
        small_stem_name(_arch)

__all__ = [
    "create_backbone",
    "timm_name",
    "apply_small_stem",
    "small_stem_name",
    "export_timm",
    "export_backbone",
    "load_backbone_weights",
    "load_exported",
    "count_parameters",
]
