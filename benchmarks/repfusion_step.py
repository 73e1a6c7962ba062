"""RepFusion stage-1 training under Lightning (RepFusionModule, the digits DataModule, the
Trainer) against a plain PyTorch loop doing the same computation with the same parts
(policy draw, truncated teacher forward, student, hint loss, probe + REINFORCE, SGD +
multistep, EMA update, timestep counts), side by side over the same batches.
The teacher has the digits teacher's architecture with random weights (same cost).

    python -m benchmarks.repfusion_step [--steps 19] [--rounds 5]
"""

from __future__ import annotations

import functools
import tempfile

import torch

from benchmarks.classifier_throughput import BATCH, make_data
from benchmarks.common import fit_seconds, record, side_by_side, step_args
from benchmarks.repfusion_teacher import ARCHITECTURES, save_teacher
from repfusion.module import RepFusionModule
from repfusion.policy import TimestepPolicy
from repfusion.teacher import DiffusionTeacher
from tasks.distill.losses import HintLoss
from tasks.distill.taps import stage_features
from tasks.models.backbones import create_backbone
from tasks.training.ema import ModelEMA
from tasks.training.optim import multistep

OPTIMIZER = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4)
SCHEDULER = functools.partial(multistep, milestones=(10, 15))


def make_module(teacher_dir: str) -> RepFusionModule:
    torch.manual_seed(0)
    return RepFusionModule(
        student={"name": "resnet18"},
        teacher=DiffusionTeacher(teacher_dir),
        distill_loss=HintLoss,
        timesteps=TimestepPolicy,
        num_classes=10,
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
    )


def lightning_run(teacher_dir: str, steps: int):
    module, dm = make_module(teacher_dir), make_data()

    def run():
        return fit_seconds(module, dm, steps, default_root_dir=teacher_dir)

    return run


def plain_run(teacher_dir: str, steps: int):
    torch.manual_seed(0)
    dm = make_data()
    student = create_backbone("resnet18", num_classes=0)
    teacher = DiffusionTeacher(teacher_dir, input_mean=dm.mean, input_std=dm.std).eval().requires_grad_(False)
    loss_fn = HintLoss(stage_features(student, torch.zeros(2, 3, 32, 32), -1)[0].shape[1], teacher.channels)
    policy = TimestepPolicy(teacher.channels, 10)
    ema = ModelEMA(student)
    optimizer = OPTIMIZER([*student.parameters(), *loss_fn.parameters(), *policy.parameters()])
    scheduler = SCHEDULER(optimizer, steps_per_epoch=steps, total_steps=steps)
    epoch, step = [0], [0]

    def run():
        student.train()
        policy.set_epoch(epoch[0])
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch[0])
        counts = torch.zeros(50, dtype=torch.long)
        for index, (x, y) in enumerate(loader):
            if index == steps:
                break
            x = dm.normalize(dm.batch_augment(x, torch.Generator().manual_seed(epoch[0] * 100_003 + index)))
            generator = torch.Generator().manual_seed(step[0])
            draw = policy.draw(x, generator)
            with torch.no_grad():
                f_t = teacher(x, draw.t, generator)
            terms = policy.losses(draw, f_t, y)
            loss = (
                loss_fn(stage_features(student, x, -1)[0], f_t)
                + terms["loss_probe"]
                + terms["loss_policy"]
                + terms["loss_entropy"]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update(student)
            counts += torch.bincount(draw.t * 50 // 1000, minlength=50)
            step[0] += 1
        epoch[0] += 1

    return run


def main() -> None:
    args = step_args(__doc__)
    with tempfile.TemporaryDirectory() as folder:
        save_teacher(folder, ARCHITECTURES["digits_16px"])
        times = side_by_side(
            {"lightning": lightning_run(folder, args.steps), "plain_pytorch": plain_run(folder, args.steps)},
            rounds=args.rounds,
        )
    steps_per_second = {name: args.steps / seconds for name, seconds in times.items()}
    record(
        "repfusion_step",
        {
            "what": "RepFusion stage 1 training steps (ResNet-18 student, digits-teacher U-Net, rl policy, hint loss), "
            "digits 32x32, "
            f"batch {BATCH}, CPU",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "steps_per_second": steps_per_second,
            "ratio_lightning_over_plain": steps_per_second["lightning"] / steps_per_second["plain_pytorch"],
        },
    )


if __name__ == "__main__":
    main()
