"""Task heads on top of timm backbones' stage features: BiSeNetV1 and FCN for segmentation,
the top-down heatmap head for landmarks. A head is built as
`head(channels, reductions, num_outputs)` from the backbone's feature_info, names the
stages it reads in `in_indices`, and is called as `head(image, features)`."""

from tasks.dense.heads.bisenet import BiSeNetV1Head
from tasks.dense.heads.fcn import FCNBlock, FCNHead
from tasks.dense.heads.heatmap import HeatmapHead

__all__ = ["BiSeNetV1Head", "FCNHead", "FCNBlock", "HeatmapHead"]
