"""NASWOT: golden values by hand (SiLU, windowed outputs, the two hook sets), hook hygiene,
train mode during scoring, and every family the zoo docs claim (all activations hooked,
windowed Swin attention read per sample, the kernel's diagonal counting every code)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dery.proxy import CodeKernel, hooked_modules, naswot
from tests.dery.families import FAMILIES, family_member


def test_golden_value_by_hand():
    # one ReLU: codes c1 = (1, 0, 1), c2 = (0, 0, 1); K_ij = D - Hamming(c_i, c_j)
    # K = [[3, 2], [2, 3]], det 5, score = log(5) / B with B = 2
    x = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, 3.0]])
    assert naswot(nn.ReLU(), [x]) == pytest.approx(math.log(5) / 2, abs=1e-12)


def test_layers_add_and_batches_average():
    x = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, 3.0]])
    # two ReLUs see the same codes: K doubles, log|det 2K| = log(4 * 5)
    assert naswot(nn.Sequential(nn.ReLU(), nn.ReLU()), [x]) == pytest.approx(math.log(20) / 2, abs=1e-12)
    y = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # codes 111 / 000: K = [[3, 0], [0, 3]]
    assert naswot(nn.ReLU(), [x, y]) == pytest.approx((math.log(5) / 2 + math.log(9) / 2) / 2, abs=1e-12)


def _linear_silu() -> nn.Sequential:
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.copy_(torch.tensor([0.0, -1.0]))
    return nn.Sequential(linear, nn.SiLU())


def test_silu_is_hooked_by_default_and_not_in_the_original_set():
    # Linear out: s1 (1, 3) -> (1, 2): codes 11; s2 (-1, .5) -> (-1, -.5): 00; s3 (2, 0) -> (2, -1): 10.
    # SiLU(z) > 0 iff z > 0: the same codes. Per layer K = [[2, 0, 1], [0, 2, 1], [1, 1, 2]], det 4.
    x = torch.tensor([[1.0, 3.0], [-1.0, 0.5], [2.0, 0.0]])
    net = _linear_silu()
    assert naswot(net, [x]) == pytest.approx(math.log(2**3 * 4) / 3, abs=1e-12)  # Linear + SiLU: det 2K
    assert naswot(net, [x], hooks="original") == pytest.approx(math.log(4) / 3, abs=1e-12)  # Linear only


class WindowAttention(nn.Module):
    """Stands for Swin's windowed attention: (B, 4) -> (B * 2 windows, 2), batch-major."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0] * 2, 2)


def test_windowed_outputs_are_read_per_sample():
    # s1 = (1, -1 | 1, 1): codes 1011; s2 = (-1, -1 | -1, -1): 0000. Hamming 3, D = 4: K = [[4, 1], [1, 4]], det 15.
    # Reading the rows window-major instead would pair (1, -1 | -1, -1) with (1, 1 | -1, -1): det 7.
    x = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    assert naswot(WindowAttention(), [x]) == pytest.approx(math.log(15) / 2, abs=1e-12)


def test_hooks_removed_and_mode_restored():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.0), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    first = naswot(net, [x])
    assert naswot(net, [x]) == first  # no hook left behind that would add layers
    assert all(not m._forward_hooks for m in net.modules())
    assert not net.training  # mode restored
    # scored in train mode: BN uses batch statistics, so the running mean moved
    assert not torch.equal(net[1].running_mean, torch.zeros(8))


ACTIVATIONS = ("ReLU", "GELU", "SiLU", "Swish", "Hardswish", "HardSwish", "Mish", "ELU", "SELU", "PReLU", "LeakyReLU")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def member(request):
    return family_member(request.param)


def test_every_activation_of_every_family_is_hooked(member):
    hooked = {id(m) for m in hooked_modules(member.model)}
    nodes = [member.node(i) for i in range(len(member.nodes))]
    activations = [m for node in nodes for m in node.modules() if type(m).__name__ in ACTIVATIONS]
    assert activations and all(id(m) in hooked for m in activations), type(member.model).__name__


def test_kernel_counts_every_code_of_every_family(member):
    """diag K = the number of hooked values per sample; two identical samples share every code
    (K = D everywhere), which mixing the windows of different samples would break."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    counted = []
    handles = [
        m.register_forward_hook(lambda m, a, o: counted.append(o[0] if isinstance(o, tuple) else o))
        for m in hooked_modules(member.model)
    ]
    model = member.model.train()
    for m in model.modules():  # stochastic depth would treat the two identical samples apart
        if type(m).__name__ == "DropPath":
            m.eval()
    recorder = CodeKernel([model])
    try:
        with torch.no_grad():
            recorder.kernel = torch.zeros(2, 2, dtype=torch.float64)
            model(x)
            per_sample = sum(out.numel() for out in counted) // 2
            assert recorder.kernel.diagonal().tolist() == [per_sample, per_sample]
            if member.family == "swin":  # the stage-0 attention runs on 16 windows per image
                assert max(out.shape[0] for out in counted) == 2 * 16
            # Train-mode BatchNorm over two identical samples divides their rounding-level differences
            # by a zero variance (at 1x1 stages), flipping codes: tinynet_e on one thread differs in 3,689.
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
            recorder.kernel = torch.zeros(2, 2, dtype=torch.float64)
            model(x[:1].expand(2, -1, -1, -1).contiguous())
            assert recorder.kernel.flatten().tolist() == [per_sample] * 4
    finally:
        recorder.remove()
        for handle in handles:
            handle.remove()
        model.eval()
