"""NASWOT: a golden value by hand, hook hygiene, and train mode during scoring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dery.proxy import naswot


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


def test_hooks_removed_and_mode_restored():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.0), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    first = naswot(net, [x])
    assert naswot(net, [x]) == first                       # no hook left behind that would add layers
    assert all(not m._forward_hooks for m in net.modules())
    assert not net.training                                # mode restored
    # scored in train mode: BN uses batch statistics, so the running mean moved
    assert not torch.equal(net[1].running_mean, torch.zeros(8))
