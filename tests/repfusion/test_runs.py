"""RepFusion as a user runs it: real 2-process DDP on the CPU, the digits chain from the
teacher to the fine-tuned student, and the message when the teacher is missing."""

from __future__ import annotations

import json

import pytest

from tasks.errors import UserError
from tests.conftest import TINY, read_summary, run_cli, run_in_process
from tests.repfusion.conftest import stage1_overrides


def test_missing_teacher_says_which_command_makes_it(tmp_path):
    overrides = [o for o in stage1_overrides(tmp_path / "nowhere") if not o.startswith("model.teacher.source")]
    with pytest.raises(UserError, match=r"No finished 'ddpm_digits' run.*python train\.py experiment=ddpm_digits"):
        run_in_process([*overrides, f"paths.log_dir={tmp_path}"], tmp_path / "run")


@pytest.mark.slow
def test_stage1_under_ddp_cpu_two_processes(teacher_dir, tmp_path):
    import torch

    from repfusion.knn import knn_accuracy
    from tasks.distill.taps import stage_features
    from tasks.io.cards import load_card, read_card
    from tasks.run.instantiate import build
    from tests.conftest import compose_config

    overrides = stage1_overrides(teacher_dir)
    result = run_cli([*overrides, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    per_epoch = json.loads((tmp_path / "export" / "timesteps.json").read_text())["per_epoch"]
    assert per_epoch == [per_epoch[0]] and sum(per_epoch[0]) == 2 * 3 * 16  # both ranks' draws gathered
    # Rank r tests samples r, r + 2, ... (one batch of 64 each); the kNN accuracy of the gathered
    # features, rank-major, is the one the exported EMA student gives on those 128 samples in one process.
    data = build("data", compose_config(overrides, tmp_path / "data").data)
    data.setup("test")
    x, y = map(torch.cat, zip(*(batch for _, batch in zip(range(2), data.test_dataloader()))))
    rank_major = torch.cat([torch.arange(0, 128, 2), torch.arange(1, 128, 2)])
    card = read_card(tmp_path / "export")
    with torch.no_grad():
        f_s = stage_features(load_card(card).eval(), data.normalize(x[rank_major]), card.fields["feature_index"])[0]
    want = knn_accuracy(f_s.float().mean(dim=(2, 3)), y[rank_major], k=10)
    assert summary["test"]["test/knn_acc"] == pytest.approx(want, abs=1e-6)


@pytest.mark.slow
def test_digits_chain_runs_teacher_to_its_three_tables(tmp_path):
    """`make train`'s chain with tiny settings and one seed: every stage runs, the oracle's
    picture gets the rl policy, and the report has its three tables with their rows."""
    tiny = [o for o in TINY if not o.startswith("trainer.enable_model_summary")] + ["data.batch_size=16"]
    trained = ["distil", "finetune", "baseline", "few_finetune", "few_baseline", "random_init", "supervised"]
    args = [f"{stage}:{o}" for stage in ["teacher", *trained] for o in tiny]
    args += [
        "teacher:model.unet.block_out_channels=[8,16,16]",
        "teacher:model.num_samples=4",
        "teacher:model.sample_steps=2",
    ]
    args += [f"{stage}:model.student.name=test_resnet" for stage in ("distil", "random_init", "supervised")]
    args += [
        f"{stage}:model.backbone.name=test_resnet" for stage in ("finetune", "baseline", "few_finetune", "few_baseline")
    ]
    args += ["oracle:grid=[0,500]", "oracle:probe.epochs=2", "oracle:probe.seeds=1", "oracle:probe.train_images=64"]
    result = run_cli(
        ["repfusion_digits", *args, "--seeds", "1", "--dir", str(tmp_path / "chain")],
        module="tasks.chain",
        env={"KT_LOG_DIR": str(tmp_path)},
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chain = json.loads((tmp_path / "chain" / "chain_summary.json").read_text())
    assert [[row["label"] for row in table["rows"]] for table in chain["tables"]] == [
        ["from scratch", "RepFusion (rl)"],
        ["from scratch", "RepFusion (rl)"],
        ["random init", "RepFusion stage 1 (rl)", "supervised from scratch (all labels, 10 epochs)"],
    ]
    assert all(row["values"] for table in chain["tables"] for row in table["rows"])
    distil = read_summary(tmp_path / "chain" / "distil" / "seed1")
    assert any(o.startswith("model.teacher.source=") and o.endswith("teacher/export/unet") for o in distil["overrides"])
    few = read_summary(tmp_path / "chain" / "few_finetune" / "seed1")
    assert any(o.endswith("distil/seed1/export/backbone.safetensors") for o in few["overrides"])
    picture = read_summary(tmp_path / "chain" / "picture")
    assert [p["run"] for p in picture["policies"]] == [str((tmp_path / "chain" / "distil" / "seed1").resolve())]
    assert (tmp_path / "chain" / "picture" / "plots" / "timestep_oracle.png").is_file()
