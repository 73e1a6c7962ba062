"""KFModule: Knowledge Factorization of a frozen teacher into a shared CKN plus one TSN per
task, trained with the InfoMax-Bottleneck objective (InfoMax between projected teacher
stages and CKN stages, and z, KD and label-smoothed CE on each factor's output, the
auxiliary TSN-only task loss, InfoMin on every h_k). The test phase runs the assembled
network and reports per-task accuracy against the teacher, assembled subsets, leakage
(cross-probes and per-TSN importances), parameters, disentanglement and transfer; export
writes the assembled network and the CKN."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn as nn

from kf.assemble import assemble
from kf.evaluation import publish, representation_figures, representation_metrics, task_metrics
from kf.factor import FactorNetwork
from kf.figures import grouped_bars, matrix_figure
from kf.losses import (
    INFOMAX_VARIANTS,
    KD_LOSSES,
    KD_TARGETS,
    infomax_loss,
    infomin_loss,
    label_smooth_ce,
    mse_logit_loss,
    vib_infomin_loss,
)
from kf.metrics import accuracy, decoded_accuracy, match_teacher, teacher_task_logits, teacher_task_probs
from kf.modularity import modularity_metrics
from kf.task_module import TaskModule
from kf.teacher import TeacherReader, TeacherSpec, load_teacher
from tasks.config.types import AtLeastOne, Choices, Count, KeywordsOf, NonNegative, Probability, Range
from tasks.distill.frozen import attach_frozen
from tasks.distill.losses import kd_loss
from tasks.errors import UserError
from tasks.models.backbones import count_parameters, export_backbone
from tasks.training.collector import Collector
from tasks.training.plots import log_figure, plots_dir


def projection(c_in: int, c_out: int) -> nn.Sequential:
    """The original's teacher-side InfoMax projection: Linear -> BN -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True), nn.Linear(c_out, c_out))


class KFModule(TaskModule):
    def __init__(
        self,
        teacher: Annotated[dict[str, Any], KeywordsOf("kf.teacher.TeacherSpec")],
        ckn: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        tsn: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        optimizer: Callable,
        scheduler: Callable | None = None,
        factor_sizes: dict[str, int] | None = None,
        tasks: str | list[dict[str, Any]] = "one_vs_rest",
        probe_tasks: list[dict[str, Any]] | None = None,
        feature_dim: Count = 0,
        teacher_stages: Sequence[int | str] = (-3, -2, -1),
        ckn_stages: Sequence[int] = (-3, -2, -1),
        infomax_weight: NonNegative = 1.0,
        infomax_variant: Annotated[str, Choices("kf.losses.INFOMAX_VARIANTS")] = "original",
        kd_weight: NonNegative = 0.1,
        temperature: Annotated[float, Range(0, low_open=True, what="logits are divided by T")] = 10.0,
        kd_target: Annotated[str, Choices("kf.losses.KD_TARGETS")] = "tempered_groups",
        kd_loss: Annotated[str, Choices("kf.losses.KD_LOSSES")] = "kl",
        label_smoothing: Probability = 0.1,
        classy_vision_smoothing: bool = True,
        task_weight: NonNegative = 1.0,
        infomin_weight: NonNegative = 1e-3,
        gaussian_tsn: bool = False,
        infomax_on_z: bool = True,
        task_reduction: Annotated[str, Choices("kf.task_module.REDUCTIONS")] = "sum",
        vectorize: bool = True,
        image_size: AtLeastOne = 32,
        in_chans: AtLeastOne = 3,
        dci_importance: Annotated[str, Choices("kf.disentanglement.IMPORTANCES")] = "gbt",
        leakage: bool = True,
        leakage_samples: Count = 2000,
    ):
        super().__init__(optimizer, scheduler, factor_sizes, tasks, probe_tasks, task_reduction)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if infomax_variant not in INFOMAX_VARIANTS:
            raise UserError(f"model.infomax_variant='{infomax_variant}' must be one of {list(INFOMAX_VARIANTS)}.")
        if kd_target not in KD_TARGETS:
            raise UserError(f"model.kd_target='{kd_target}' must be one of {list(KD_TARGETS)}.")
        if kd_loss not in KD_LOSSES:
            raise UserError(f"model.kd_loss='{kd_loss}' must be one of {list(KD_LOSSES)}.")
        if len(teacher_stages) != len(ckn_stages):
            raise UserError(
                f"InfoMax pairs teacher and CKN stages one to one: model.teacher_stages has {len(teacher_stages)} "
                f"entries but model.ckn_stages has {len(ckn_stages)}."
            )
        spec = TeacherSpec.parse(teacher)
        network, self.teacher_specs = load_teacher(spec, self.factor_sizes)
        attach_frozen(self, "teacher", network)
        self.reader = TeacherReader(self.teacher, teacher_stages, spec.bn_mode)
        self.matches = match_teacher(self.teacher_specs, self.specs)
        orphans = [s.name for s, m in zip(self.specs, self.matches) if m is None]
        if orphans and kd_weight > 0:
            raise UserError(
                f"The teacher's outputs ({[t.name for t in self.teacher_specs]}) cannot give a distribution over the "
                f"classes of tasks {orphans}. Use a teacher that predicts their factors, or set model.kd_weight=0."
            )

        self.factors = FactorNetwork(
            ckn, tsn, [s.num_classes for s in self.specs], feature_dim, ckn_stages, vectorize, gaussian_tsn
        )
        self.aux_heads = nn.ModuleList(nn.Linear(self.factors.dim, s.num_classes) for s in self.specs)
        teacher_dims, ckn_dims = self._stage_channels(image_size, in_chans)
        self.projections = nn.ModuleList(projection(t, c) for t, c in zip(teacher_dims, ckn_dims))
        # With feature_dim > 0, z is a linear map of the pooled CKN that no stage shows InfoMax;
        # one more pair ties it to the teacher's last stage.
        self.z_projection = projection(teacher_dims[-1], feature_dim) if feature_dim and infomax_on_z else None
        self._collector: Collector | None = None
        self._assembled = None

    def _stage_channels(self, image_size: int, in_chans: int) -> tuple[list[int], list[int]]:
        """Channels of the paired teacher and CKN stages, from one dry forward."""
        dummy = torch.zeros(2, in_chans, image_size, image_size)
        was_training = self.factors.training
        self.factors.eval()
        with torch.no_grad():
            teacher_stages, _ = self.reader(dummy)
            _, ckn_stages = self.factors.common(dummy, with_stages=True)
        self.factors.train(was_training)
        return [t.shape[1] for t in teacher_stages], [c.shape[1] for c in ckn_stages]

    def task_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.factors(x)

    # --- training ------------------------------------------------------------------
    def step_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term of one training batch and their weighted total (`loss`)."""
        hp = self.hparams
        targets = self.targets(y)
        teacher_stages, teacher_logits = self.reader(x)
        z, ckn_stages = self.factors.common(x, with_stages=True)
        if self.factors.gaussian_tsn:
            h, mu, log_var = self.factors.sample(self.factors.specific(x, stats=True))
            infomin = self.reduce([vib_infomin_loss(m, v) for m, v in zip(mu, log_var)])
        else:
            h = self.factors.specific(x)
            infomin = self.reduce([infomin_loss(h_k) for h_k in h])
        logits = self.factors.logits(z, h)
        pairs = [(proj(t), c) for proj, t, c in zip(self.projections, teacher_stages, ckn_stages)]
        if self.z_projection is not None:
            pairs.append((self.z_projection(teacher_stages[-1]), z))
        infomax = torch.stack([infomax_loss(t, c, hp.infomax_variant) for t, c in pairs]).mean()
        smooth = dict(smoothing=hp.label_smoothing, classy_vision=hp.classy_vision_smoothing)
        ce = self.reduce([label_smooth_ce(lg, targets[:, k], **smooth) for k, lg in enumerate(logits)])
        aux = self.reduce(
            [label_smooth_ce(head(h[k]), targets[:, k], **smooth) for k, head in enumerate(self.aux_heads)]
        )
        terms = {"infomax": infomax, "ce": ce, "aux": aux, "infomin": infomin}
        loss = hp.infomax_weight * infomax + ce + hp.task_weight * aux + hp.infomin_weight * infomin
        if hp.kd_weight > 0:
            if hp.kd_loss == "mse":
                teacher = teacher_task_logits(teacher_logits, self.matches)
                terms["kd"] = self.reduce([mse_logit_loss(lg, t) for lg, t in zip(logits, teacher)])
            else:
                probs = teacher_task_probs(teacher_logits, self.matches, hp.temperature, hp.kd_target)
                terms["kd"] = self.reduce([kd_loss(lg, p, hp.temperature) for lg, p in zip(logits, probs)])
            loss = loss + hp.kd_weight * terms["kd"]
        terms["loss"] = loss
        terms["task_acc"] = torch.stack(
            [(lg.argmax(1) == targets[:, k]).float().mean() for k, lg in enumerate(logits)]
        ).mean()
        return terms

    def training_step(self, batch, batch_idx):
        x, y = batch
        terms = self.step_losses(x, y)
        for name, value in terms.items():
            self.log(
                f"train/{name}",
                value.detach(),
                prog_bar=name in ("loss", "task_acc"),
                on_step=True,
                on_epoch=name == "task_acc",
            )
        return terms["loss"]

    # --- test: the assembled network, against the teacher ------------------------------
    def on_test_epoch_start(self) -> None:
        self._assembled = assemble(self.factors, self.specs).to(self.device)
        self._collector = Collector()

    def test_step(self, batch, batch_idx):
        x, y = batch
        net = self._assembled
        teacher_stages, teacher_logits = self.reader(x)
        z, h = net.features(x)
        logits = net.outputs(z, h)
        record = dict(
            y=y,
            z=z,
            h=torch.cat(h, 1),
            teacher_feature=teacher_stages[-1],
            **{f"logits{k}": lg for k, lg in enumerate(logits)},
            **{f"teacher{j}": t for j, t in enumerate(teacher_logits)},
        )
        if self.hparams.leakage:
            # Task i with its head reading z alone (TSN_i dropped): how much task i needs TSN_i.
            record["drop_pred"] = torch.stack([head(z).argmax(1) for head in net.heads], 1)
        self._collector.add(**record)

    def on_test_epoch_end(self) -> None:
        data = self._collector.gather()
        metrics = self._report(data) if self.trainer.is_global_zero else None
        publish(self, metrics)
        self._assembled = None

    def _report(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        y = data["y"]
        targets = self.targets(y)
        logits = [data[f"logits{k}"] for k in range(len(self.specs))]
        teacher_logits = [data[f"teacher{j}"] for j in range(len(self.teacher_specs))]
        teacher_probs = teacher_task_probs(teacher_logits, self.matches)
        out = task_metrics(logits, self.specs, targets)
        out.update(task_metrics(teacher_probs, self.specs, targets, who="teacher_"))
        out["test/acc"] = self.headline_accuracy(logits, y, out["test/task_acc"])
        decoded = decoded_accuracy(logits, self.specs, self.factor_names, y)
        own = decoded_accuracy(teacher_logits, self.teacher_specs, self.factor_names, y)
        if own:
            out["test/teacher_acc"] = float(np.mean([own[f] for f in decoded if f in own] or list(own.values())))
            if any(f in own for f in decoded):  # test/acc is then the same factor's accuracy as teacher_acc
                out["test/acc_gap"] = out["test/acc"] - out["test/teacher_acc"]
        if all(m is not None for m in self.matches):
            out["test/task_bacc_gap"] = out["test/task_bacc"] - out["test/teacher_task_bacc"]
        out.update(self._subset_metrics(logits, teacher_logits, y))
        report = self._assembled.parameter_report()
        out.update({f"test/params/{k}": float(v) for k, v in report.items() if k != "tasks"})
        out["test/params/teacher"] = float(count_parameters(self.teacher.module))
        if self.hparams.leakage:
            out.update(self._leakage_metrics(data, logits, targets))
        reps = {
            "ckn": data["z"],
            "tsn": data["h"],
            "ckn+tsn": torch.cat([data["z"], data["h"]], 1),
            "teacher": data["teacher_feature"],
        }
        out.update(
            representation_metrics(
                reps,
                y,
                self.factor_names,
                self.specs,
                self.probe_specs,
                self.hparams.dci_importance,
                disentangle_reps=("ckn", "tsn", "ckn+tsn"),
                probe_reps=("ckn", "teacher"),
            )
        )
        groups = {
            s.name: {
                "factor": out[f"test/task_acc/{s.name}"],
                **(
                    {"teacher": out[f"test/teacher_task_acc/{s.name}"]}
                    if f"test/teacher_task_acc/{s.name}" in out
                    else {}
                ),
            }
            for s in self.specs
        }
        low = min(min(g.values()) for g in groups.values())
        log_figure(
            self.trainer,
            grouped_bars(
                groups, "test accuracy", "per-task accuracy: factor network vs teacher", ylim=(max(0.0, low - 0.1), 1.0)
            ),
            "task_accuracy",
        )
        representation_figures(self.trainer, out)
        return out

    def _leakage_metrics(
        self, data: dict[str, torch.Tensor], logits: list[torch.Tensor], targets: torch.Tensor
    ) -> dict[str, float]:
        """Cross-probes and per-TSN importances on held-out test codes (kf.modularity), and the
        accuracy each task loses when its own TSN is dropped; pictures of all three."""
        names = [s.name for s in self.specs]
        dim = self.factors.dim
        tsn_codes = [data["h"][:, k * dim : (k + 1) * dim].numpy().astype(np.float64) for k in range(len(names))]
        out, matrices = modularity_metrics(
            tsn_codes,
            data["z"].numpy().astype(np.float64),
            targets.numpy(),
            [s.num_classes for s in self.specs],
            names,
            seed=0,
            max_samples=self.hparams.leakage_samples or None,
        )
        drop = data["drop_pred"]
        loss = [
            accuracy(lg, targets[:, k]) - float((drop[:, k] == targets[:, k]).float().mean())
            for k, lg in enumerate(logits)
        ]
        out["test/drop_tsn/own_acc_loss"] = float(np.mean(loss))
        rows = matrices["rows"]
        log_figure(
            self.trainer,
            matrix_figure(
                np.array(matrices["cross_probe"]),
                rows,
                names,
                "balanced accuracy",
                "cross-probe: linear probe from each code (row) to each task",
            ),
            "cross_probe",
        )
        log_figure(
            self.trainer,
            matrix_figure(
                np.array(matrices["importance"]),
                rows,
                names,
                "sum |lasso weight|",
                "per-TSN importance for each task (DCI)",
            ),
            "tsn_importance",
        )
        log_figure(
            self.trainer,
            grouped_bars(
                {n: {"drop own TSN": v} for n, v in zip(names, loss)},
                "accuracy lost",
                "accuracy each task loses without its own TSN (head reads z)",
                ylim=None,
            ),
            "drop_tsn",
        )
        (plots_dir(self.trainer) / "leakage.json").write_text(json.dumps(matrices, indent=1))
        return out

    def _subset_metrics(
        self, logits: list[torch.Tensor], teacher_logits: list[torch.Tensor], y: torch.Tensor
    ) -> dict[str, float]:
        """Assembled networks of the first n one-vs-rest factors (n = 2 .. K) classify the
        samples of their n classes, against the teacher restricted to the same classes."""
        out: dict[str, float] = {}
        if len(self.factor_names) != 1 or not all(s.num_classes == 2 and len(s.groups[1]) == 1 for s in self.specs):
            return out
        identity = [j for j, t in enumerate(self.teacher_specs) if t.num_values == t.num_classes]
        y = y.view(-1)
        margins = torch.stack([lg[:, 1] - lg[:, 0] for lg in logits], 1)  # log-odds of each factor's class
        values = torch.tensor([s.groups[1][0] for s in self.specs])
        curve: dict[str, dict[str, float]] = {}
        for n in range(2, len(self.specs) + 1):
            keep = torch.isin(y, values[:n])
            if not keep.any():
                continue
            pred = values[:n][margins[keep, :n].argmax(1)]
            out[f"test/subset_acc/n{n}"] = float((pred == y[keep]).float().mean())
            curve[str(n)] = {"assembled factors": out[f"test/subset_acc/n{n}"]}
            if identity:
                t_pred = values[:n][teacher_logits[identity[0]][keep][:, values[:n]].argmax(1)]
                out[f"test/teacher_subset_acc/n{n}"] = float((t_pred == y[keep]).float().mean())
                curve[str(n)]["teacher"] = out[f"test/teacher_subset_acc/n{n}"]
        if curve:
            log_figure(
                self.trainer,
                grouped_bars(
                    curve,
                    "accuracy on their classes",
                    "assembled n-class networks (first n factors, no fine-tuning) vs teacher",
                    ylim=(max(0.0, min(min(v.values()) for v in curve.values()) - 0.1), 1.0),
                ),
                "assembled_subsets",
            )
        return out

    # --- export ----------------------------------------------------------------------
    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """The assembled network of every factor (assembled.json) and the CKN as a timm export (ckn.json)."""
        files = assemble(self.factors, self.specs).save(export_dir)
        files.update({f"ckn_{k}": v for k, v in export_backbone(self.factors.ckn, export_dir, name="ckn").items()})
        return files
