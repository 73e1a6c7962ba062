"""Factor networks and their assembly: vectorised TSNs match the loop, the assembled
network equals every factor's own output exactly, subsets and save/load keep it exact,
and dropping a factor changes only its own task."""

from __future__ import annotations

import pytest
import torch

from kf.assemble import assemble, load_assembled, main as assemble_cli
from kf.factor import FactorNetwork, run_stacked
from kf.task_spec import build_tasks
from tasks.errors import UserError
from tests.kf.conftest import TINY_NET


@pytest.fixture(scope="module")
def trained():
    """A factor network with 4 tasks whose BatchNorms saw a few training batches."""
    torch.manual_seed(0)
    specs = build_tasks([{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}] +
                        [{"name": f"is{v}", "groups": [[u for u in range(10) if u != v], [v]]} for v in (1, 2, 3)], {"label": 10})
    net = FactorNetwork(TINY_NET, TINY_NET, [s.num_classes for s in specs], feature_dim=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 3, 32, 32)
        loss = sum(lg.logsumexp(1).mean() for lg in net(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), specs


def test_vectorised_tsns_match_the_loop_and_train_every_tsn():
    torch.manual_seed(1)
    net = FactorNetwork(TINY_NET, TINY_NET, [2, 2, 3], vectorize=True)
    loop = FactorNetwork(TINY_NET, TINY_NET, [2, 2, 3], vectorize=False)
    loop.load_state_dict(net.state_dict())
    x = torch.randn(6, 3, 32, 32)
    h_vec, h_loop = net.specific(x), loop.specific(x)
    assert torch.allclose(h_vec, h_loop, atol=1e-4, rtol=1e-4)
    h_vec.square().sum().backward()
    h_loop.square().sum().backward()
    for (name, p), q in zip(net.tsns.named_parameters(), loop.tsns.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-3, rtol=1e-3), name
    # BatchNorm running statistics updated by the vectorised forward are written back to every TSN.
    for k in range(3):
        a, b = net.tsns[k].backbone.bn1.running_mean, loop.tsns[k].backbone.bn1.running_mean
        assert torch.allclose(a, b, atol=1e-5) and a.abs().sum() > 0


def test_run_stacked_leaves_eval_buffers_alone():
    net = FactorNetwork(TINY_NET, TINY_NET, [2, 2]).eval()
    before = net.tsns[0].backbone.bn1.running_var.clone()
    run_stacked(list(net.tsns), torch.randn(4, 3, 32, 32))
    assert torch.equal(before, net.tsns[0].backbone.bn1.running_var)


def test_assembled_outputs_equal_each_factor_exactly(trained):
    net, specs = trained
    x = torch.randn(5, 3, 32, 32)
    full = assemble(net, specs)
    with torch.no_grad():
        outputs = full(x)
        for k in range(len(specs)):
            assert torch.equal(outputs[k], net.factor_logits(x, k)), specs[k].name
        sub = assemble(net, specs, [3, 1])
        assert sub.task_names == ["is3", "is1"]
        pair = sub(x)
        assert torch.equal(pair[0], net.factor_logits(x, 3)) and torch.equal(pair[1], net.factor_logits(x, 1))
        assert all(torch.equal(a, b) for a, b in zip(full.subset(["is3", "is1"])(x), pair))


def test_assembly_needs_no_training_and_copies_the_factors(trained):
    net, specs = trained
    full = assemble(net, specs)
    assert not full.training
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(full.ckn.parameters(), net.ckn.parameters()))
    with pytest.raises(UserError, match="not factors"):
        assemble(net, specs, [7])
    with pytest.raises(UserError, match="Unknown tasks"):
        full.subset(["is9"])


def test_dropping_a_factor_changes_only_its_task(trained):
    net, specs = trained
    full = assemble(net, specs)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        base = full(x)
        for name in full.task_names:
            dropped = full(x, drop=[name])
            for other, a, b in zip(full.task_names, base, dropped):
                assert torch.equal(a, b) == (other != name), (name, other)


def test_parameter_report_is_n_small_plus_one_big(trained):
    net, specs = trained
    report = assemble(net, specs).parameter_report()
    big = sum(p.numel() for p in net.ckn.parameters())
    small = [sum(p.numel() for p in net.tsns[k].parameters()) + sum(p.numel() for p in net.heads[k].parameters()) for k in range(4)]
    assert report["ckn"] == big
    assert report["assembled"] == big + sum(small)
    assert report["separate"] == 4 * big + sum(small)


def test_save_load_round_trip_is_exact(trained, tmp_path, capsys):
    net, specs = trained
    full = assemble(net, specs)
    files = full.save(tmp_path / "export")
    loaded = load_assembled(files["assembled"])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(full(x), loaded(x)))
    assert loaded.specs == full.specs
    assemble_cli([files["assembled"], "--tasks", "is2,low_high", "--out", str(tmp_path / "pair")])
    pair = load_assembled(tmp_path / "pair" / "assembled.json")
    with torch.no_grad():
        out = pair(x)
        assert torch.equal(out[0], net.factor_logits(x, 2)) and torch.equal(out[1], net.factor_logits(x, 0))
    assert '"is2"' in capsys.readouterr().out


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_assembled(tmp_path / "missing.json")
    (tmp_path / "card.json").write_text('{"kind": "multi_head"}')
    with pytest.raises(UserError, match="not an assembled KF network"):
        load_assembled(tmp_path / "card.json")
