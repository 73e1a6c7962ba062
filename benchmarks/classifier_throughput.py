"""Training throughput of the classifier under Lightning (the framework's module, data
module and trainer) against a plain PyTorch loop with the same model, data, augmentation,
optimiser, schedule and metric, measured side by side.

    python -m benchmarks.classifier_throughput [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from benchmarks.common import fit_seconds, record, side_by_side, step_args
from tasks.data import DigitsDataModule, RandomAffine
from tasks.models.backbones import create_backbone
from tasks.models.classification import ClassificationModule
from tasks.training.optim import cosine

BATCH = 64


def make_data() -> DigitsDataModule:
    dm = DigitsDataModule(
        batch_size=BATCH, seed=0, batch_augment=RandomAffine(degrees=10, translate_px=2, scale=(0.9, 1.1))
    )
    dm.setup("fit")
    return dm


def lightning_run(steps: int):
    torch.manual_seed(0)
    dm = make_data()
    module = ClassificationModule(
        backbone={"name": "resnet18"},
        num_classes=10,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
        scheduler=functools.partial(cosine, warmup_epochs=1),
    )

    def run():
        return fit_seconds(module, dm, steps)

    return run


def plain_run(steps: int):
    torch.manual_seed(0)
    dm = make_data()
    model = create_backbone("resnet18", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = cosine(optimizer, steps_per_epoch=steps, total_steps=steps, warmup_epochs=1)
    accuracy = MulticlassAccuracy(10, average="micro")
    augment = dm.batch_augment
    epoch = [0]

    def run():
        model.train()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch[0])
        for index, (x, y) in enumerate(loader):
            if index == steps:
                break
            generator = torch.Generator().manual_seed(epoch[0] * 100_003 + index)
            x = dm.normalize(augment(x, generator))
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            accuracy(logits.detach(), y)
        accuracy.compute()
        accuracy.reset()
        epoch[0] += 1

    return run


def main() -> None:
    args = step_args(__doc__)
    times = side_by_side(
        {"lightning": lightning_run(args.steps), "plain_pytorch": plain_run(args.steps)}, rounds=args.rounds
    )
    images = args.steps * BATCH
    throughput = {name: images / seconds for name, seconds in times.items()}
    record(
        "classifier_throughput",
        {
            "what": "ResNet-18 on digits 32x32, batch 64, SGD + cosine, train-time augmentation, CPU",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "images_per_second": throughput,
            "ratio_lightning_over_plain": throughput["lightning"] / throughput["plain_pytorch"],
        },
    )


if __name__ == "__main__":
    main()
