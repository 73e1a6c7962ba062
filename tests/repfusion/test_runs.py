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
    result = run_cli([*stage1_overrides(teacher_dir), "trainer=ddp_cpu", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    assert "test/knn_acc" in summary["test"]
    per_epoch = json.loads((tmp_path / "export" / "timesteps.json").read_text())["per_epoch"]
    assert per_epoch == [per_epoch[0]] and sum(per_epoch[0]) == 2 * 3 * 16  # both ranks' draws gathered


@pytest.mark.slow
def test_digits_chain_runs_teacher_to_finetune(tmp_path):
    tiny = [o for o in TINY if not o.startswith("trainer.enable_model_summary")] + ["data.batch_size=16"]
    small = ["model.student.name=test_resnet"]
    result = run_cli(["repfusion_digits", *tiny, "teacher:model.unet.block_out_channels=[8,16,16]", "teacher:model.num_samples=4",
                      "teacher:model.sample_steps=2", *(f"distil:{o}" for o in small),
                      "finetune:model.backbone.name=test_resnet", "baseline:model.backbone.name=test_resnet",
                      "--dir", str(tmp_path / "chain")], module="tasks.chain", env={"KT_LOG_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chain = json.loads((tmp_path / "chain" / "chain_summary.json").read_text())
    labels = [row["label"] for row in chain["rows"]]
    assert labels == ["from scratch", "RepFusion (rl)"] and all(row["estimate"]["n"] == 1 for row in chain["rows"])
    distil = read_summary(tmp_path / "chain" / "distil")
    assert any(o.startswith("model.teacher.source=") and o.endswith("teacher/export/unet") for o in distil["overrides"])
    finetune = read_summary(tmp_path / "chain" / "finetune")
    assert any(o.endswith("distil/export/backbone.safetensors") for o in finetune["overrides"])
