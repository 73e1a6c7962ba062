"""Small random-init members of every architecture family the zoo docs claim, with what the
architecture definition says about their nodes (shared by test_zoo and test_proxy)."""

from __future__ import annotations

from dery.zoo import Member, load_member

# family: (timm arch, kwargs, layout, (first node, last node), node count,
#          (input of the first node, output of the last node) at 32 x 32 px)
FAMILIES = {
    # timm's ResNet stem is 64 wide and /4 (8 x 8); layer4 ends at channels[-1] on 1 x 1
    "resnet": (
        "resnet18",
        {"channels": [8, 16, 32, 64]},
        "nchw",
        ("layer1.0", "layer4.1"),
        8,
        ((64, 8, 8), (64, 1, 1)),
    ),
    # bottlenecks expand 4x: 32 * 4 = 128
    "resnext": (
        "resnext50_32x4d",
        {"channels": [16, 16, 32, 32], "layers": [1, 1, 2, 1], "cardinality": 4, "base_width": 16},
        "nchw",
        ("layer1.0", "layer4.0"),
        5,
        ((64, 8, 8), (128, 1, 1)),
    ),
    # RegNetX-200MF: a 32-wide /2 stem, stage widths 24, 56, 152, 368
    "regnet": ("regnetx_002", {}, "nchw", ("s1.b1", "s4.b7"), 13, ((32, 16, 16), (368, 1, 1))),
    # a /4 patchify stem of dims[0]; the first stage has no down-sampling node
    "convnext": (
        "convnext_atto",
        {"dims": (8, 16, 32, 64), "depths": (1, 1, 2, 1)},
        "nchw",
        ("stages.0.blocks.0", "stages.3.blocks.0"),
        8,
        ((8, 8, 8), (64, 1, 1)),
    ),
    # TinyNet-E: a 32-wide /2 stem; the last stage's 320 channels at width 0.51, rounded to 8: 160
    "efficientnet": ("tinynet_e", {}, "nchw", ("blocks.0.0", "blocks.6.0"), 10, ((32, 16, 16), (160, 1, 1))),
    # MobileNetV3-Small-0.5: a 16-wide /2 stem; the last node is the 576 * 0.5 = 288 ConvBnAct
    "mobilenetv3": ("mobilenetv3_small_050", {}, "nchw", ("blocks.0.0", "blocks.5.0"), 12, ((16, 16, 16), (288, 1, 1))),
    # (32 / 8)^2 = 16 patches + CLS
    "vit": (
        "vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_heads": 2, "depth": 3},
        "tokens",
        ("blocks.0", "blocks.2"),
        3,
        ((17, 32), (17, 32)),
    ),
    # DeiT (distilled): CLS + distillation token
    "deit": (
        "deit_tiny_distilled_patch16_224",
        {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_heads": 2, "depth": 3},
        "tokens",
        ("blocks.0", "blocks.2"),
        3,
        ((18, 32), (18, 32)),
    ),
    # patch 2: a 16 x 16 grid of 16-dim tokens (16 windows of 4 x 4 in stage 0); three mergings: 2 x 2 x 128
    "swin": (
        "swin_tiny_patch4_window7_224",
        {
            "img_size": 32,
            "patch_size": 2,
            "window_size": 4,
            "embed_dim": 16,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 1, 2, 2],
        },
        "nhwc",
        ("layers.0.blocks.0", "layers.3.blocks.0"),
        8,
        ((16, 16, 16), (2, 2, 128)),
    ),
}


def family_member(family: str, num_classes: int = 5) -> Member:
    arch, kwargs, *_ = FAMILIES[family]
    spec = {"arch": arch, "kwargs": {**kwargs, "num_classes": num_classes}, "weights": "random"}
    return load_member(family, spec, (3, 32, 32))


def stage_partition(members: dict[str, Member], K: int = 4) -> dict:
    """A partition without similarity: each member at its first cap-respecting cut, block k
    in set k (the released code's same-stage sets), in partition.json's layout."""
    from dery.partition import MemberNodes

    out = {"K": K, "members": {}}
    for name, member in members.items():
        cuts = MemberNodes.of(name, member.node_params, K, 0.2).feasible[0]
        out["members"][name] = {
            "blocks": [{"stage": k, "start": int(cuts[k]), "end": int(cuts[k + 1]) - 1, "set": k} for k in range(K)]
        }
    return out
