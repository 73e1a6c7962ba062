"""The plain-PyTorch side of the start-up benchmark (benchmarks/startup.py): the work of
`python train.py experiment=classify_digits trainer.max_epochs=10 logger=csv` written as one
script with torch, timm and scikit-learn only. The same data (the bundled digits at 32 px, the
stratified 70/15/15 split of seed 0, a DataLoader of batches of 64 shuffled per epoch with the
last partial batch dropped, the same random affine warps and normalisation), the same network
(timm resnet18, 10 classes), SGD with Nesterov momentum, lr 0.05, weight decay 5e-4, a one-epoch
linear warm-up then cosine per step; training loss and accuracy per step; validation every epoch
(loss, top-1, top-5), the best (val loss) checkpoint with the optimiser state and last.ckpt as
its hard link (Lightning writes last.ckpt only when it saves a checkpoint), a test of the best,
a safetensors export, metrics.csv and summary.json.

What the framework does on top, and the benchmark counts on its side: two sanity-check
validation batches before training, a NaN/inf check of the loss per step and of the weights per
checkpoint, checkpoints written through a temporary file with fsync, the resolved config in
.hydra/, hparams.yaml, the job log and the export's card.

    python benchmarks/startup_plain.py --epochs 10 --out /tmp/plain
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = 0.3053, 0.3236


def digits(size: int = 32):
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1)
    y = torch.tensor(data.target)
    idx = list(range(len(y)))
    rest, test = train_test_split(idx, test_size=0.15, stratify=y, random_state=0)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, stratify=y[rest], random_state=0)
    return {
        name: (x[sorted(ids)].contiguous(), y[sorted(ids)])
        for name, ids in (("train", train), ("val", val), ("test", test))
    }


def affine(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotation within 10 degrees, scale 0.9-1.1, shifts within 2 px (as conf/data/digits.yaml)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=g) * 20 - 10) * math.pi / 180
    scale = 0.9 + 0.2 * torch.rand(n, generator=g)
    tx, ty = ((torch.rand(n, generator=g) * 4 - 2) * 2 / x.shape[-1] for _ in range(2))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


def loader(split: tuple[torch.Tensor, torch.Tensor], shuffle: torch.Generator | None = None) -> DataLoader:
    """Batches of 64 as a plain PyTorch user writes them; training shuffles and drops the last partial batch."""
    return DataLoader(
        TensorDataset(*split),
        batch_size=64,
        shuffle=shuffle is not None,
        generator=shuffle,
        drop_last=shuffle is not None,
    )


def evaluate(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    model.eval()
    loss, correct, top5 = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in loader(split):
            logits = model((xb - MEAN) / STD)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
            top5 += (logits.topk(5, 1).indices == yb[:, None]).any(1).sum().item()
    n = len(split[1])
    return {"loss": loss / n, "acc": correct / n, "acc_top5": top5 / n}


def schedule(optimizer: torch.optim.Optimizer, per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """One epoch of linear warm-up, then cosine to zero at the last step; stepped per batch."""
    total, warmup = per_epoch * epochs, per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    start = time.time()
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(42)
    data = digits()
    model = timm.create_model("resnet18", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = schedule(optimizer, len(data["train"][1]) // 64, args.epochs)
    augment, shuffle = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
    train_batches = loader(data["train"], shuffle)
    rows, best = [], (math.inf, None)
    for epoch in range(args.epochs):
        model.train()
        correct = seen = 0
        for xb, yb in train_batches:
            logits = model((affine(xb, augment) - MEAN) / STD)
            loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct += (logits.detach().argmax(1) == yb).sum().item()
            seen += len(yb)
        val = evaluate(model, data["val"])
        rows.append(
            {
                "epoch": epoch,
                "train_loss": loss.item(),
                "train_acc": correct / seen,
                **{f"val_{k}": v for k, v in val.items()},
            }
        )
        if val["loss"] < best[0]:
            state = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            if best[1] is not None:
                best[1].unlink()  # keep one best checkpoint, as save_top_k=1 does
            best = (val["loss"], out / "checkpoints" / f"best-epoch{epoch:03d}.ckpt")
            torch.save(state, best[1])
            last = out / "checkpoints" / "last.ckpt"  # as Lightning's save_last: the newest checkpoint saved
            last.unlink(missing_ok=True)
            os.link(best[1], last)
        print(f"epoch {epoch + 1}/{args.epochs}  val/loss={val['loss']:.4g}  val/acc={val['acc']:.4g}", flush=True)
    model.load_state_dict(torch.load(best[1], weights_only=True)["state_dict"])
    test = evaluate(model, data["test"])
    (out / "export").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "export" / "model.safetensors"))
    (out / "export" / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 10}))
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"test": {f"test/{k}": v for k, v in test.items()}, "wall_time_s": time.time() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["test"]))


if __name__ == "__main__":
    main()
