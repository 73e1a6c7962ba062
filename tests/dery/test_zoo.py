"""Contract tests of the zoo: per architecture family, on a small random-init model, every
node's input and output shape, and a forward through the nodes in order that equals the
model's own forward; config overrides for other models; weights from a project run."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dery.zoo import Member, dissect, load_member, load_model
from tasks.errors import UserError

# (timm arch, kwargs, family, layout, expected node names (first, last), node count)
FAMILIES = {
    "resnet": ("resnet18", {"channels": [8, 16, 32, 64]}, "nchw", ("layer1.0", "layer4.1"), 8),
    "resnext": ("resnext50_32x4d", {"channels": [16, 16, 32, 32], "layers": [1, 1, 2, 1], "cardinality": 4, "base_width": 16}, "nchw", ("layer1.0", "layer4.0"), 5),
    "regnet": ("regnetx_002", {}, "nchw", ("s1.b1", "s4.b7"), 13),
    "convnext": ("convnext_atto", {"dims": (8, 16, 32, 64), "depths": (1, 1, 2, 1)}, "nchw", ("stages.0.blocks.0", "stages.3.blocks.0"), 8),
    "efficientnet": ("tinynet_e", {}, "nchw", ("blocks.0.0", "blocks.6.0"), 10),
    "mobilenetv3": ("mobilenetv3_small_050", {}, "nchw", ("blocks.0.0", "blocks.5.0"), 12),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_heads": 2, "depth": 3}, "tokens",
            ("blocks.0", "blocks.2"), 3),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 16,
                                              "depths": [1, 1, 2, 1], "num_heads": [1, 1, 2, 2]}, "nhwc",
             ("layers.0.blocks.0", "layers.3.blocks.0"), 8),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_member(request) -> tuple[str, Member]:
    arch, kwargs, *_ = FAMILIES[request.param]
    return request.param, load_member(request.param, {"arch": arch, "kwargs": {**kwargs, "num_classes": 5}, "weights": "random"}, (3, 32, 32))


def _run_nodes(member: Member, x0: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, ...]], list[tuple[int, ...]]]:
    ins, outs, x = [], [], x0
    for name in member.nodes:
        ins.append(tuple(x.shape[1:]))
        x = member.model.get_submodule(name)(x)
        outs.append(tuple(x.shape[1:]))
    return x, ins, outs


def test_nodes_found_with_shapes(family_member):
    family, member = family_member
    _, _, layout, (first, last), count = FAMILIES[family]
    assert member.layout == layout and member.family == ("resnet" if family == "resnext" else family)
    assert (member.nodes[0], member.nodes[-1], len(member.nodes)) == (first, last, count)
    assert len(member.in_shapes) == len(member.out_shapes) == len(member.node_params) == count
    assert all(p > 0 for p in member.node_params)
    assert sum(member.node_params) <= sum(p.numel() for p in member.model.parameters())
    for i in range(1, count):  # the nodes form a chain
        assert member.in_shapes[i] == member.out_shapes[i - 1]


def test_forward_through_nodes_equals_model_forward(family_member):
    _, member = family_member
    model = member.model.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first, last = model.get_submodule(member.nodes[0]), model.get_submodule(member.nodes[-1])
    seen = {}
    h1 = first.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))
    with torch.no_grad():
        reference = model(x)
        h1.remove()
        chained, ins, outs = _run_nodes(member, seen["in"])
        assert ins == member.in_shapes and outs == member.out_shapes  # shapes of a batch of 3, as recorded with 2
        # the model's own forward, with its last node's output replaced by the nodes run in order
        h2 = last.register_forward_hook(lambda m, a, o: chained)
        replaced = model(x)
        h2.remove()
    torch.testing.assert_close(replaced, reference, rtol=0, atol=0)
    assert reference.shape == (3, 5)


def test_nodes_override_for_other_models():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.a = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.b = nn.Conv2d(6, 6, 3, padding=1)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(self.b(self.a(self.stem(x))).mean((2, 3)))

    from dery.nodes import find_nodes

    with pytest.raises(UserError, match="cannot find the nodes of a Net"):
        find_nodes(Net())
    nodes, layout = find_nodes(Net(), ["a", "b"], "nchw")
    member = dissect(Member("net", Net().eval(), "custom", {}, "random", "x", nodes, layout), (3, 16, 16))
    assert member.in_shapes == [(4, 16, 16), (6, 8, 8)] and member.out_shapes == [(6, 8, 8), (6, 8, 8)]
    assert member.node_params == [4 * 6 * 9 + 6, 6 * 6 * 9 + 6]
    with pytest.raises(UserError, match="Closest"):
        find_nodes(Net(), ["a", "bb"])
    with pytest.raises(UserError, match="not a chain"):
        dissect(Member("net", Net().eval(), "custom", {}, "random", "x", ["stem", "b"], "nchw"), (3, 16, 16))
    with pytest.raises(UserError, match="layout"):
        find_nodes(Net(), ["a"], "nhcw")


def test_weights_forms_and_errors(tmp_path):
    with pytest.raises(UserError, match="run:<run dir>, file:<path>, hub:<timm tag> or random"):
        load_model("m", "resnet18", {}, "s3://bucket/w")
    with pytest.raises(UserError, match="no export/model.json"):
        load_model("m", None, {}, f"run:{tmp_path}")
    with pytest.raises(UserError, match="needs weights"):
        load_member("m", {"arch": "resnet18"}, (3, 32, 32))
    with pytest.raises(UserError, match="unknown keys"):
        load_member("m", {"arch": "resnet18", "weights": "random", "layers": 3}, (3, 32, 32))


def test_member_from_a_project_run_and_a_file(tmp_path, tiny):
    """A zoo member is an ordinary classifier run: its export loads (no pickle) with its
    test accuracy; the same safetensors loads as file: for its architecture."""
    from tests.conftest import run_in_process

    run_dir = tmp_path / "run"
    summary = run_in_process(["experiment=dery_zoo_digits", "model.backbone.name=mobilenetv3_small_050", *tiny], run_dir)
    member = load_member("mb", {"weights": f"run:{run_dir}"}, (3, 32, 32))
    assert member.arch == "mobilenetv3_small_050" and member.accuracy == pytest.approx(summary["test"]["test/acc"])
    assert len(member.nodes) == 12
    exported = run_dir / "export" / "model.safetensors"
    same = load_member("mb2", {"arch": "mobilenetv3_small_050", "kwargs": {"num_classes": 10}, "weights": f"file:{exported}"}, (3, 32, 32))
    assert same.fingerprint == member.fingerprint
    for a, b in zip(member.model.state_dict().values(), same.model.state_dict().values()):
        assert torch.equal(a, b)
