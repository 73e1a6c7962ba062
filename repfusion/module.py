"""RepFusionModule: stage 1 of RepFusion. Per batch (x, y):

    policy(x) -> t ~ pi(t|x) -> teacher(x, t) under no_grad, stopped at its tapped layer -> f_T
    student(x) at stage `feature_index` -> f_S -> loss(f_S, f_T)
    probe(pool(f_T)) -> cross-entropy -> reward -> REINFORCE (rl mode); the off-policy
    reward's probe trains on teacher(x, u) at a uniform u beside it (repfusion.policy)
    one optimiser step for student, adapter, probe and policy (or a second optimiser for
    probe and policy); then the EMA of the student moves.

The student never sees labels: they reach only the probe, and only those >= 0 (a few-label
pool marks the rest -1). Label-free stage 1
(`timesteps.probe: false`, t fixed, uniform or curriculum) needs none and also runs on
batches that hold only images. Validation and test report the distillation loss and, where
the split has labels, the EMA student's leave-one-out k-NN accuracy (`knn_acc`) and the
probe's accuracy and cross-entropy on the teacher feature (`probe_acc`, `loss_probe`). The
export is the EMA student's backbone (safetensors + card) for `model.backbone.init=` of
stage 2."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytorch_lightning as pl
import torch

from repfusion.knn import knn_accuracy
from repfusion.plots import timestep_figure
from repfusion.policy import UNLABELLED, TimestepPolicy
from repfusion.teacher import DiffusionTeacher
from tasks.config.types import AtLeastOne, Count, KeywordsOf, Probability, Seed
from tasks.distill.frozen import attach_frozen, trainable_parameters
from tasks.distill.losses import FeatureLoss
from tasks.distill.taps import stage_features
from tasks.errors import UserError
from tasks.models.backbones import create_backbone, export_backbone
from tasks.training.collector import Collector
from tasks.training.ema import ModelEMA
from tasks.training.optim import configure_optimizers
from tasks.training.plots import log_figure
from tasks.training.seeding import step_generator

# The frozen teacher and the EMA copy stay in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


class RepFusionModule(pl.LightningModule):
    def __init__(
        self,
        student: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        teacher: DiffusionTeacher,
        distill_loss: Callable[..., FeatureLoss],
        timesteps: Callable[..., TimestepPolicy],
        num_classes: Count,
        optimizer: Callable,
        scheduler: Callable | None = None,
        policy_optimizer: Callable | None = None,
        feature_index: int = -1,
        image_size: AtLeastOne = 32,
        ema_decay: Probability = 0.999,
        ema_warmup: bool = True,
        knn_k: AtLeastOne = 10,
        histogram_bins: AtLeastOne = 50,
        plot_every_n_epochs: Count = 5,
        seed: Seed = 0,
    ):
        """`student`: kwargs of tasks.models.backbones.create_backbone (a timm model). `feature_index`:
        the student stage distilled (timm feature_info index; -1 is the last). `distill_loss`
        and `timesteps` are partials completed here with the channel counts. `policy_optimizer`:
        a separate optimiser for policy and probe (null: the student's, as the original).
        `plot_every_n_epochs`: how often the timestep picture is redrawn (and on the last epoch);
        drawing it costs about as much as a few training steps."""
        super().__init__()
        self.save_hyperparameters(
            ignore=["teacher", "distill_loss", "timesteps", "optimizer", "scheduler", "policy_optimizer"]
        )
        self.student = create_backbone(**{**student, "num_classes": 0})
        self.feature_index = feature_index
        attach_frozen(self, "teacher", teacher)
        student_channels, positions = self._prepare_student(image_size)
        self.distill_loss = distill_loss(student_channels=student_channels, teacher_channels=teacher.channels)
        if self.distill_loss.spatial and positions == 1:
            raise UserError(
                f"{type(self.distill_loss).__name__} compares spatial maps, but the student's stage {feature_index} "
                f"is 1x1 at {image_size}x{image_size} inputs. Pick an earlier stage (model.feature_index=-2), the "
                "small-input stem (model.student.small_input_stem=true), or the hint/rkd loss."
            )
        self.policy = timesteps(feature_channels=teacher.channels, num_classes=num_classes)
        self.ema = ModelEMA(self.student, ema_decay, ema_warmup)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # label-free stage 1 (fixed or uniform t, no probe) has nothing for a policy optimiser to train
        self.policy_optimizer_factory = policy_optimizer if trainable_parameters(self.policy) else None
        self.automatic_optimization = self.policy_optimizer_factory is None
        self.t_histograms: list[list[int]] = []  # one row per finished epoch
        self._epoch_counts: torch.Tensor | None = None
        self._eval_store = Collector()  # pooled EMA-student features and labels of a val/test epoch

    def _prepare_student(self, image_size: int) -> tuple[int, int]:
        """Channels and positions of the tapped stage. Parameters the tapped feature does not
        depend on (stages after it, the head) are frozen: stage 1 gives them no signal, and
        DDP would reject parameters without gradients."""
        was_training = self.student.training
        self.student.eval()
        feature = stage_features(self.student, torch.zeros(2, 3, image_size, image_size), self.feature_index)[0]
        feature.float().sum().backward()
        for p in self.student.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None
        self.student.train(was_training)
        return feature.shape[1], feature.shape[2] * feature.shape[3]

    # --- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is not None:
            self.teacher.module.set_input_normalization(data)
            n = getattr(data, "num_classes", None)
            if n and n != self.hparams.num_classes:
                raise UserError(
                    f"The data has {n} classes but model.num_classes={self.hparams.num_classes}. "
                    f"Set model.num_classes={n}."
                )

    def _generator(self, device: torch.device, stream: str, epoch: int, batch: int) -> torch.Generator:
        """Randomness of t and noise, a stream of tasks.training.seeding: the same after a resume."""
        return step_generator(self.hparams.seed, stream, self.global_rank, epoch, batch, device)

    def student_feature(self, x: torch.Tensor, ema: bool = False) -> torch.Tensor:
        return stage_features(self.ema.model if ema else self.student, x, self.feature_index)[0]

    def draw_timesteps(self, x: torch.Tensor, generator: torch.Generator):
        """t for the normalised batch x; the policy sees [-1, 1] (input_range unit, as the
        original's LeNet) or x as it is (normalized)."""
        if self.policy.mode == "rl" and self.policy.input_range == "unit":
            return self.policy.draw(self.teacher.module.pixels.to_unit(x), generator)
        return self.policy.draw(x, generator)

    def probe_feature(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator):
        """The off-policy probe's training input: the teacher feature of the labelled images at
        uniformly drawn t (None where the probe trains on the policy's own draws)."""
        if not self.policy.off_policy or y is None:
            return None
        labelled = y != UNLABELLED
        if not bool(labelled.any()):
            return None
        t = self.policy.draw_probe_timesteps(int(labelled.sum()), x.device, generator)
        return self.teacher(x[labelled], t, generator)

    @staticmethod
    def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images, labels or None): a data set without labels yields batches of images only."""
        if torch.is_tensor(batch):
            return batch, None
        return batch[0], (batch[1] if len(batch) > 1 else None)

    # --- training --------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = self.split_batch(batch)
        generator = self._generator(x.device, "repfusion/timesteps", self.current_epoch, batch_idx)
        self.policy.set_step(self.global_step // (1 if self.automatic_optimization else 2))  # optimiser steps per batch
        draw = self.draw_timesteps(x, generator)
        f_t = self.teacher(x, draw.t, generator)
        loss_feat = self.distill_loss(self.student_feature(x), f_t)
        terms = self.policy.losses(draw, f_t, y, self.probe_feature(x, y, generator))
        loss = loss_feat + terms.get("loss_probe", 0.0) + terms.get("loss_policy", 0.0) + terms.get("loss_entropy", 0.0)
        self._count(draw.t)
        entropy = self.policy.t_entropy(draw)
        self.log("train/loss", loss, prog_bar=True)
        logged = {
            "loss_feat": loss_feat,
            **terms,
            "t_mean": draw.t.float().mean(),
            "policy_entropy": entropy,
            "entropy_coef": self.policy.entropy_coef if self.policy.mode == "rl" else 0.0,
        }
        for name, value in logged.items():
            self.log(
                f"train/{name}", value, on_step=False, on_epoch=True, prog_bar=name in ("policy_entropy", "t_mean")
            )
        if not self.automatic_optimization:
            self._manual_step(loss)
        return loss

    def _manual_step(self, loss: torch.Tensor) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()
        schedulers = self.lr_schedulers() or []
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update(self.student)

    def on_train_epoch_start(self) -> None:
        self.policy.set_epoch(self.current_epoch)
        self._epoch_counts = None

    def _count(self, t: torch.Tensor) -> None:
        bins = self.hparams.histogram_bins
        index = (t * bins // self.policy.num_timesteps).clamp(0, bins - 1)
        counts = torch.bincount(index, minlength=bins)
        self._epoch_counts = counts if self._epoch_counts is None else self._epoch_counts + counts

    def on_train_epoch_end(self) -> None:
        if self._epoch_counts is None:
            return
        counts = self.all_gather(self._epoch_counts)
        counts = counts.sum(0) if counts.dim() > 1 else counts
        self.t_histograms.append([int(c) for c in counts.tolist()])
        epoch, every = self.current_epoch + 1, max(1, self.hparams.plot_every_n_epochs)
        if self.trainer.is_global_zero and (epoch % every == 0 or epoch >= (self.trainer.max_epochs or epoch)):
            title = f"timesteps chosen by the '{self.policy.mode}' policy, T={self.policy.num_timesteps}"
            figure = timestep_figure(np.array(self.t_histograms), self.policy.num_timesteps, title)
            log_figure(self.trainer, figure, "timestep_histogram")

    # --- validation / test -----------------------------------------------------------------
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, y = self.split_batch(batch)
        generator = self._generator(x.device, "repfusion/evaluation", 0, batch_idx)  # the same t every epoch
        draw = self.draw_timesteps(x, generator)
        f_t = self.teacher(x, draw.t, generator)
        f_s = self.student_feature(x, ema=True)
        n = x.shape[0]
        self.log(f"{stage}/loss_feat", self.distill_loss(f_s, f_t), batch_size=n, sync_dist=True)
        self.log(f"{stage}/t_mean", draw.t.float().mean(), batch_size=n, sync_dist=True)
        if y is None:
            return
        if self.policy.probe is not None:
            terms = self.policy.losses(draw, f_t, y)
            self.log(f"{stage}/probe_acc", terms["probe_acc"], batch_size=n, sync_dist=True)
            self.log(f"{stage}/loss_probe", terms["loss_probe"], batch_size=n, sync_dist=True)
        self._eval_store.add(features=f_s.float().mean(dim=(2, 3)), labels=y)

    def _finish_evaluation(self, stage: str) -> None:
        if not self._eval_store:
            return
        store = self._eval_store.gather()  # every rank's, rank-major
        if self.trainer.sanity_checking:
            return
        self.log(
            f"{stage}/knn_acc",
            knn_accuracy(store["features"], store["labels"], self.hparams.knn_k),
            prog_bar=stage == "val",
        )

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    # --- optimisers, checkpoints, export ---------------------------------------------------
    def configure_optimizers(self):
        policy_params = trainable_parameters(self.policy)
        separate = self.policy_optimizer_factory is not None
        owned = {id(p) for p in policy_params} if separate else set()
        main = configure_optimizers(
            self,
            [p for p in trainable_parameters(self) if id(p) not in owned],
            self.optimizer_factory,
            self.scheduler_factory,
        )
        if not separate:
            return main
        return main, configure_optimizers(self, policy_params, self.policy_optimizer_factory, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["repfusion_t_histograms"] = self.t_histograms

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.t_histograms = [list(map(int, row)) for row in checkpoint.get("repfusion_t_histograms", [])]

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """The EMA student backbone, plus the timestep histograms of every epoch."""
        export_dir = Path(export_dir)
        card = {
            "stage": "repfusion stage 1 (EMA student)",
            "feature_index": self.feature_index,
            "teacher": self.teacher.module.source,
            "teacher_layer": self.teacher.module.layer,
            "timestep_mode": self.policy.mode,
            "labels_used": self.policy.probe is not None,
        }
        files = export_backbone(self.ema.model, export_dir, name="backbone", card=card)
        timesteps = export_dir / "timesteps.json"
        timesteps.write_text(
            json.dumps(
                {
                    "mode": self.policy.mode,
                    "num_timesteps": self.policy.num_timesteps,
                    "bins": self.hparams.histogram_bins,
                    "per_epoch": self.t_histograms,
                }
            )
        )
        return {"backbone": files["weights"], "backbone_card": files["card"], "timesteps": str(timesteps)}
