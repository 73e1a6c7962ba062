"""Knowledge Factorization training under Lightning (KFModule, the digits DataModule, the
Trainer) against a plain PyTorch loop doing the same computation with the same parts
(frozen ResNet-18 teacher read at three stages, ResNet-18 CKN, ten vmapped ResNet-10t TSNs,
InfoMax + KD + label-smoothed CE + auxiliary CE + InfoMin, SGD + cosine, grad-norm clip 35),
side by side over the same batches. The teacher has the classify_digits architecture with
random weights (same cost).

    python -m benchmarks.kf_step [--steps 19] [--rounds 5]
"""

from __future__ import annotations

import functools
import tempfile

import torch
import torch.nn as nn

from benchmarks.classifier_throughput import BATCH, make_data
from benchmarks.common import fit_seconds, record, side_by_side, step_args
from kf.factor import FactorNetwork
from kf.losses import infomax_loss, infomin_loss, label_smooth_ce
from kf.metrics import match_teacher, teacher_task_probs
from kf.module import KFModule, projection
from kf.task_spec import one_vs_rest, task_targets
from kf.teacher import TeacherSpec, load_teacher
from tasks.distill.losses import kd_loss
from tasks.models.backbones import create_backbone, export_backbone
from tasks.training.optim import cosine

OPTIMIZER = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
SCHEDULER = functools.partial(cosine, warmup_epochs=1)
TSN = {"name": "resnet10t", "channels": [16, 32, 64, 128], "stem_width": 8}
CKN = {"name": "resnet18"}
T, CLIP = 10.0, 35.0


def save_teacher(folder: str) -> str:
    torch.manual_seed(0)
    return export_backbone(create_backbone("resnet18", num_classes=10), folder, name="model")["card"]


def lightning_run(card: str, steps: int):
    torch.manual_seed(0)
    dm = make_data()
    module = KFModule(
        teacher={"source": card},
        ckn=CKN,
        tsn=TSN,
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
        probe_tasks=None,
        leakage=False,
    )

    def run():
        return fit_seconds(module, dm, steps, gradient_clip_val=CLIP)

    return run


def plain_run(card: str, steps: int):
    torch.manual_seed(0)
    dm = make_data()
    specs = one_vs_rest("label", 10)
    teacher, teacher_specs = load_teacher(TeacherSpec(source=card), {"label": 10})
    teacher.eval().requires_grad_(False)
    matches = match_teacher(teacher_specs, specs)
    factors = FactorNetwork(CKN, TSN, [2] * 10)
    aux_heads = nn.ModuleList(nn.Linear(factors.dim, 2) for _ in specs)
    with torch.no_grad():
        dummy = torch.zeros(2, 3, 32, 32)
        t_dims = [f.shape[1] for f in teacher.forward_intermediates(dummy, indices=[2, 3, 4], intermediates_only=True)]
    projections = nn.ModuleList(projection(t, c) for t, c in zip(t_dims, [128, 256, 512]))
    params = [*factors.parameters(), *aux_heads.parameters(), *projections.parameters()]
    optimizer = OPTIMIZER(params)
    scheduler = SCHEDULER(optimizer, steps_per_epoch=steps, total_steps=steps)
    epoch = [0]

    def run():
        factors.train(), aux_heads.train(), projections.train()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch[0])
        for index, (x, y) in enumerate(loader):
            if index == steps:
                break
            x = dm.normalize(dm.batch_augment(x, torch.Generator().manual_seed(epoch[0] * 100_003 + index)))
            targets = task_targets(specs, ["label"], y)
            with torch.no_grad():
                final, stages = teacher.forward_intermediates(x, indices=[2, 3, 4])
                teacher_logits = teacher.forward_head(final)
            z, ckn_stages = factors.common(x, with_stages=True)
            h = factors.specific(x)
            logits = factors.logits(z, h)
            infomax = torch.stack(
                [infomax_loss(p(t.mean((2, 3))), c) for p, t, c in zip(projections, stages, ckn_stages)]
            ).mean()
            probs = teacher_task_probs([teacher_logits], matches, T)
            ce = sum(label_smooth_ce(lg, targets[:, k]) for k, lg in enumerate(logits))
            aux = sum(label_smooth_ce(head(h[k]), targets[:, k]) for k, head in enumerate(aux_heads))
            kd = sum(kd_loss(lg, p, T) for lg, p in zip(logits, probs))
            infomin = sum(infomin_loss(h_k) for h_k in h)
            loss = infomax + ce + aux + 0.1 * kd + 1e-3 * infomin
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            optimizer.step()
            scheduler.step()
        epoch[0] += 1

    return run


def main() -> None:
    args = step_args(__doc__)
    with tempfile.TemporaryDirectory() as folder:
        card = save_teacher(folder)
        times = side_by_side(
            {"lightning": lightning_run(card, args.steps), "plain_pytorch": plain_run(card, args.steps)},
            rounds=args.rounds,
        )
    steps_per_second = {name: args.steps / seconds for name, seconds in times.items()}
    record(
        "kf_step",
        {
            "what": "KF training (ResNet-18 teacher -> ResNet-18 CKN + 10 vmapped ResNet-10t TSNs, "
            "10 one-vs-rest tasks), "
            f"digits 32x32, batch {BATCH}, CPU",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "steps_per_second": steps_per_second,
            "ratio_lightning_over_plain": steps_per_second["lightning"] / steps_per_second["plain_pytorch"],
        },
    )


if __name__ == "__main__":
    main()
