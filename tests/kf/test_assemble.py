"""Factor networks and their assembly: vectorised TSNs match the loop, the assembled
network gives the validated (vectorised) factor outputs and wires every task to its own
head (golden), save/load keeps it exact, and dropping TSN_k removes exactly W_k h_k from
task k."""

from __future__ import annotations

import copy

import pytest
import torch

from kf.assemble import assemble, load_assembled
from kf.assemble import main as assemble_cli
from kf.factor import FactorNetwork, run_stacked
from kf.task_spec import build_tasks
from tasks.errors import UserError
from tests.kf.conftest import TINY_NET


@pytest.fixture(scope="module")
def trained():
    """A factor network with 4 tasks whose BatchNorms saw a few training batches."""
    torch.manual_seed(0)
    specs = build_tasks(
        [{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}]
        + [{"name": f"is{v}", "groups": [[u for u in range(10) if u != v], [v]]} for v in (1, 2, 3)],
        {"label": 10},
    )
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


def test_assembled_outputs_are_the_validated_vectorised_factors(trained):
    # The factors were trained and validated through FactorNetwork.forward (TSNs as one vmap);
    # the assembled network runs every module directly. Both must give head_k(z + h_k).
    net, specs = trained
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        validated = net(x)
        full = assemble(net, specs)(x)
        pair = assemble(net, specs, [3, 1])(x)
    for k in range(len(specs)):
        assert torch.allclose(full[k], validated[k], atol=1e-5, rtol=1e-5), specs[k].name
    assert torch.allclose(pair[0], validated[3], atol=1e-5) and torch.allclose(pair[1], validated[1], atol=1e-5)
    assert not torch.allclose(pair[0], pair[1], atol=1e-3)  # the factors differ, so a mis-wired subset would show


def test_assembly_wires_every_task_to_its_own_head_golden(trained):
    # Heads with zero weights and bias (k, -k): the output of task k is exactly (k, -k) for any input.
    net, specs = trained
    wired = copy.deepcopy(net)
    with torch.no_grad():
        for k, head in enumerate(wired.heads):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([float(k), -float(k)]))
        outputs = assemble(wired, specs, [2, 0, 3])(torch.randn(2, 3, 32, 32))
    assert [out[0].tolist() for out in outputs] == [[2.0, -2.0], [0.0, 0.0], [3.0, -3.0]]


def test_dropping_tsn_i_removes_exactly_w_i_h_i_from_task_i(trained):
    # logits_k = W_k (z + h_k) + b_k, so dropping TSN_k subtracts W_k h_k from task k and nothing else.
    net, specs = trained
    full = assemble(net, specs)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        base = full(x)
        h = net.specific(x)  # the vectorised TSNs of the original factors
        for k, name in enumerate(full.task_names):
            dropped = full(x, drop=[name])
            assert torch.allclose(base[k] - dropped[k], h[k] @ net.heads[k].weight.T, atol=1e-4), name
            assert all(torch.equal(a, b) for j, (a, b) in enumerate(zip(base, dropped)) if j != k)
            assert not torch.allclose(base[k], dropped[k], atol=1e-4)


def test_assembly_needs_no_training_and_copies_the_factors(trained):
    net, specs = trained
    full = assemble(net, specs)
    assert not full.training
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(full.ckn.parameters(), net.ckn.parameters()))
    with pytest.raises(UserError, match="not factors"):
        assemble(net, specs, [7])
    with pytest.raises(UserError, match="Unknown tasks"):
        full.subset(["is9"])


def test_parameter_report_is_n_small_plus_one_big(trained):
    net, specs = trained
    report = assemble(net, specs).parameter_report()
    big = sum(p.numel() for p in net.ckn.parameters())
    small = [
        sum(p.numel() for p in net.tsns[k].parameters()) + sum(p.numel() for p in net.heads[k].parameters())
        for k in range(4)
    ]
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
    with pytest.raises(UserError, match="is an export of kind 'multi_head'; expected kf_assembled"):
        load_assembled(tmp_path / "card.json")


def test_exports_load_through_the_card_registry_in_both_layouts(trained, tmp_path):
    """The assembled network and the multi-head network: load_card on the export folder, and
    the method's loader on a card as the writer before tasks.io.cards wrote it (no format field),
    give the saved network exactly."""
    import json
    import shutil

    from kf.assemble import KIND as ASSEMBLED
    from kf.multihead import KIND as MULTI_HEAD
    from kf.multihead import MultiHeadNet, load_multi_head
    from tasks.io.cards import load_card

    net, specs = trained
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(2)
    multi = MultiHeadNet.create(TINY_NET, specs).eval()
    saved = {
        "assembled": (assemble(net, specs), ASSEMBLED, load_assembled),
        "model": (multi, MULTI_HEAD, load_multi_head),
    }
    for name, (network, kind, loader) in saved.items():
        new, old = tmp_path / f"{name}_new", tmp_path / f"{name}_old"
        network.save(new) if name == "assembled" else network.export(new)
        card = json.loads((new / f"{name}.json").read_text())
        assert (card["kind"], card["format"]) == (kind, 2)
        shutil.copytree(new, old)
        (old / f"{name}.json").write_text(json.dumps({k: v for k, v in card.items() if k != "format"}))
        with torch.no_grad():
            want = network(x)
            for loaded in (load_card(new / f"{name}.json"), loader(old / f"{name}.json"), loader(old)):
                outputs = loaded.eval()(x)  # the multi-head loader leaves the mode to its caller (KF freezes it)
                assert type(loaded) is type(network) and all(torch.equal(a, b) for a, b in zip(outputs, want)), name
