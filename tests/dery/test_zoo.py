"""Contract tests of the zoo: per architecture family, on a small random-init model, every
node's input and output shape, and a forward through the nodes in order that equals the
model's own forward; config overrides for other models; weights from a project run."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dery.zoo import Member, dissect, load_member, load_model
from tasks.errors import UserError
from tests.dery.families import FAMILIES
from tests.dery.families import family_member as family_member_of


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_member(request) -> tuple[str, Member]:
    return request.param, family_member_of(request.param)


def _run_nodes(member: Member, x0: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, ...]], list[tuple[int, ...]]]:
    ins, outs, x = [], [], x0
    for name in member.nodes:
        ins.append(tuple(x.shape[1:]))
        x = member.model.get_submodule(name)(x)
        outs.append(tuple(x.shape[1:]))
    return x, ins, outs


def test_nodes_found_with_shapes(family_member):
    family, member = family_member
    _, _, layout, (first, last), count, (first_in, last_out) = FAMILIES[family]
    expected_family = {"resnext": "resnet", "deit": "vit"}.get(family, family)
    assert member.layout == layout and member.family == expected_family
    assert (member.nodes[0], member.nodes[-1], len(member.nodes)) == (first, last, count)
    assert (member.in_shapes[0], member.out_shapes[-1]) == (first_in, last_out)  # from the architecture's definition
    # stem and head are no nodes
    assert 0 < sum(member.node_params) < sum(p.numel() for p in member.model.parameters())


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


def test_vit_at_a_non_native_size_needs_img_size():
    """A ViT built for 224 px in a 32 px zoo stops with what to set (not timm's AssertionError)."""
    vit = {"arch": "vit_tiny_patch16_224", "kwargs": {"depth": 2}, "weights": "random"}
    with pytest.raises(UserError, match=r"built for 224x224 inputs.*zoo.members.v.kwargs.img_size=32"):
        load_member("v", vit, (3, 32, 32))
    member = load_member("v", {**vit, "kwargs": {"depth": 2, "img_size": 32}}, (3, 32, 32))
    assert member.in_shapes[0] == (1 + (32 // 16) ** 2, 192)  # CLS + a 2 x 2 grid of patches
    dynamic = load_member("d", {**vit, "kwargs": {"depth": 2, "dynamic_img_size": True}}, (3, 32, 32))
    assert dynamic.in_shapes[0] == (1 + 4, 192)  # timm resamples on the fly


def test_weights_forms_and_errors(tmp_path):
    with pytest.raises(UserError, match="run:<run dir>, file:<path>, hub:<timm tag> or random"):
        load_model("m", "resnet18", {}, "s3://bucket/w")
    with pytest.raises(UserError, match=r"no export card there \(export/config.json\)"):
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
    summary = run_in_process(
        ["experiment=dery_zoo_digits", "model.backbone.name=mobilenetv3_small_050", *tiny], run_dir
    )
    member = load_member("mb", {"weights": f"run:{run_dir}"}, (3, 32, 32))
    assert member.arch == "mobilenetv3_small_050" and member.accuracy == pytest.approx(summary["test"]["test/acc"])
    assert len(member.nodes) == 12
    exported = run_dir / "export" / "model.safetensors"
    spec = {"arch": "mobilenetv3_small_050", "kwargs": {"num_classes": 10}, "weights": f"file:{exported}"}
    same = load_member("mb2", spec, (3, 32, 32))
    assert same.fingerprint == member.fingerprint
    for a, b in zip(member.model.state_dict().values(), same.model.state_dict().values()):
        assert torch.equal(a, b)
