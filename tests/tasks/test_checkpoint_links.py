"""tasks.training.checkpointing.ModelCheckpoint: a last.ckpt of the state the step's top-k file already
holds is a hard link to it (one write, not two); otherwise it is a file of its own. Checked on a
tiny module whose validation score is scripted, so which epochs improve is known."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch

from tasks.io.checkpoints import load_checkpoint
from tasks.training.checkpointing import AtomicCheckpointIO, ModelCheckpoint

SCORES = [3.0, 2.0, 5.0, 1.0, 4.0]  # val/loss per epoch: epochs 0, 1 and 3 improve


class Scripted(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)

    val_dataloader = train_dataloader


class Inodes(pl.Callback):
    """After each epoch's saves: whether last.ckpt and the best file are one file. (Lightning
    runs checkpoint callbacks last, so an epoch's saves are seen at the next epoch's start.)"""

    def __init__(self, checkpoint: ModelCheckpoint):
        self.checkpoint, self.shared, self.first_epoch = checkpoint, [], 0

    def on_train_start(self, trainer, pl_module):
        self.first_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > self.first_epoch:
            self.record()

    def on_train_end(self, trainer, pl_module):
        self.record()

    def record(self):
        last, best = f"{self.checkpoint.dirpath}/last.ckpt", self.checkpoint.best_model_path
        self.shared.append(os.path.exists(best) and os.stat(last).st_ino == os.stat(best).st_ino)


def fit(tmp_path, epochs, ckpt_path=None):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min", save_last=True, save_top_k=1)
    inodes = Inodes(checkpoint)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[checkpoint, inodes],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Scripted(), ckpt_path=ckpt_path)
    return checkpoint, inodes.shared


def test_last_is_always_a_link_to_the_checkpoint_saved_in_its_step(tmp_path):
    """Lightning writes last.ckpt only in a step that saved a top-k file (its save_last: "a copy
    whenever a checkpoint file gets saved"), so it is always that file's twin: epoch 2 does not
    improve, saves nothing, and last.ckpt stays epoch 1's state."""
    checkpoint, shared = fit(tmp_path, epochs=len(SCORES))
    assert shared == [True] * len(SCORES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=3-step=8.ckpt", "last.ckpt"]
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == load_checkpoint(checkpoint.best_model_path)["epoch"] == 3


def test_a_linked_last_outlives_its_twin_and_resumes(tmp_path):
    """A hard link, not a symlink: removing the best file (as a later improvement does) leaves a
    whole last.ckpt, and a run resumed from it goes on to link the next best."""
    first, _ = fit(tmp_path, epochs=2)
    Path(first.best_model_path).unlink()
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
    checkpoint, shared = fit(tmp_path, epochs=4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert shared == [False, True]  # epoch 2 saves nothing: last.ckpt is still the removed file's data
    assert checkpoint.best_model_score == 1.0 and load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=3-step=8.ckpt", "last.ckpt"]


def test_a_run_resumed_from_its_first_checkpoint_keeps_writing_last_ckpt(tmp_path):
    """The first epoch's file is both the best and last.ckpt; the state it records must already
    name last.ckpt, or the resumed run would find a 'foreign' last.ckpt and write last-v1.ckpt."""
    fit(tmp_path, epochs=1)
    fit(tmp_path, epochs=3, ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
