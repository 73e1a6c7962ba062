"""LandmarkModule: top-down keypoint detection over any timm backbone with a heatmap head;
Gaussian targets (sigma 2 heatmap cells; sub-pixel "unbiased" or mmpose's "msra"),
target-weighted MSE, argmax decoding with Taylor or quarter-cell refinement (or
soft-argmax), optional flip testing (with mmpose's one-cell shift), NME with a configurable
normaliser, a test report with FR/AUC and per-subset NME, and a picture of true against
predicted points each val/test epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch

from tasks.config.types import Choices, Count, KeywordsOf
from tasks.dense.heads.init import init_mmpose_backbone, initialize_head
from tasks.dense.heatmap import (
    ENCODINGS,
    REFINEMENTS,
    decode_heatmaps,
    flip_heatmaps,
    soft_argmax,
    weighted_heatmap_mse,
)
from tasks.dense.landmark_report import LandmarkReport
from tasks.dense.module import DenseModule, describe_partial
from tasks.dense.nme import AVERAGES, NORMALIZERS, NormalizedMeanError
from tasks.dense.pictures import keypoint_figure
from tasks.dense.targets import encode_targets
from tasks.errors import UserError

DECODERS = (*REFINEMENTS, "soft_argmax")
NORMALIZER_CHOICES = ("interocular", *NORMALIZERS)  # interocular: the pair of eye corners the data names


class LandmarkModule(DenseModule):
    headline, higher_is_better, picture_name = "nme", False, "keypoints"

    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        head: Callable,
        num_keypoints: Count,
        optimizer: Callable,
        scheduler: Callable | None = None,
        sigma: float = 2.0,
        target_encoding: Annotated[str, Choices("tasks.dense.heatmap.ENCODINGS")] = "unbiased",
        decode: Annotated[str, Choices("tasks.dense.landmarks.DECODERS")] = "taylor",
        blur_kernel: int = 0,
        soft_argmax_beta: float = 10.0,
        flip_test: bool = False,
        shift_heatmap: bool = False,
        normalizer: Annotated[str, Choices("tasks.dense.landmarks.NORMALIZER_CHOICES")] = "interocular",
        normalizer_pair: Sequence[int] | None = None,
        nme_average: Annotated[str, Choices("tasks.dense.nme.AVERAGES")] = "images",
        failure_threshold: float = 0.1,
        head_init: Annotated[str, Choices("tasks.dense.heads.init.HEAD_INITS")] = "pytorch",
        plot_samples: Count = 8,
    ):
        for key, value, allowed in (
            ("decode", decode, DECODERS),
            ("target_encoding", target_encoding, ENCODINGS),
            ("normalizer", normalizer, NORMALIZER_CHOICES),
            ("nme_average", nme_average, AVERAGES),
        ):
            if value not in allowed:
                raise UserError(f"model.{key}='{value}' is not one of {list(allowed)}.")
        super().__init__(backbone, head, num_keypoints, optimizer, scheduler, plot_samples)
        initialize_head(self.head, head_init)
        if head_init == "mmpose" and not backbone.get("init"):
            init_mmpose_backbone(self.backbone)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "head"])
        self.hparams["head"] = describe_partial(head)
        self.num_keypoints, self.sigma, self.decode, self.encoding = num_keypoints, sigma, decode, target_encoding
        self.blur_kernel, self.beta = blur_kernel, soft_argmax_beta
        self.flip_test, self.shift_heatmap = flip_test, shift_heatmap
        self.normalizer, self.normalizer_pair = normalizer, list(normalizer_pair) if normalizer_pair else None
        self.nme_average, self.failure_threshold = nme_average, failure_threshold
        self.nme: torch.nn.ModuleDict | None = None  # built in setup(), once the data's eye indices are known
        self.report: LandmarkReport | None = None
        self.register_buffer("flip_index", torch.arange(num_keypoints), persistent=False)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        n = getattr(data, "num_keypoints", None)
        if n and n != self.num_keypoints:
            raise UserError(
                f"The data has {n} keypoints but model.num_keypoints={self.num_keypoints}. Set model.num_keypoints={n}."
            )
        if getattr(data, "flip_index", None):
            self.flip_index = torch.as_tensor(list(data.flip_index), device=self.flip_index.device)
        elif self.flip_test:
            raise UserError(
                "model.flip_test=true needs the data's flip_index (which keypoint each becomes in a mirror image)."
            )
        kind, pair = self.normalizer, self.normalizer_pair
        if kind == "interocular":
            kind, pair = "pair", pair or getattr(data, "interocular", None)
            if pair is None:
                raise UserError(
                    f"{type(data).__name__} names no eye keypoints; set model.normalizer=bbox_diagonal "
                    "(or pair with model.normalizer_pair=[i, j])."
                )
        self.nme = torch.nn.ModuleDict(
            {s: NormalizedMeanError(kind, pair, self.nme_average) for s in ("val", "test")}
        ).to(self.device)
        subsets = tuple(getattr(data, "subset_names", ()))
        self.report = LandmarkReport(kind, pair, self.nme_average, subsets, self.failure_threshold).to(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps (N, K, h, w); with flip testing, averaged with those of the mirrored image."""
        heatmaps = self.head_forward(x)
        if self.flip_test and not self.training:
            flipped = flip_heatmaps(self.head_forward(x.flip(-1)), self.flip_index, self.shift_heatmap)
            heatmaps = 0.5 * (heatmaps + flipped)
        return heatmaps

    def stride(self, x: torch.Tensor, heatmaps: torch.Tensor) -> float:
        return x.shape[-1] / heatmaps.shape[-1]

    def keypoints(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (N, K, 2) in input pixels and their scores."""
        heatmaps = self(x)
        return self._decode(heatmaps, self.stride(x, heatmaps))

    def _decode(self, heatmaps: torch.Tensor, stride: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.decode == "soft_argmax":
            return soft_argmax(heatmaps, stride, self.beta, encoding=self.encoding)
        return decode_heatmaps(heatmaps, stride, self.decode, self.blur_kernel, self.encoding)

    def targets(
        self, heatmaps: torch.Tensor, x: torch.Tensor, points: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_targets(points, visible, heatmaps.shape[-2:], self.stride(x, heatmaps), self.sigma, self.encoding)

    def _loss(
        self, heatmaps: torch.Tensor, x: torch.Tensor, points: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        return weighted_heatmap_mse(heatmaps, *self.targets(heatmaps, x, points, visible))

    def training_step(self, batch, batch_idx):
        x, points, visible, *_ = batch
        loss = self._loss(self.head_forward(x), x, points, visible)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, points, visible, *extra = batch  # extra: the data's per-sample subset tags, if it has any
        heatmaps = self(x)
        loss = getattr(self, f"{stage}_loss")
        loss(self._loss(heatmaps, x, points, visible))
        pred, _ = self._decode(heatmaps, self.stride(x, heatmaps))
        self.nme[stage](pred, points, visible)
        if stage == "test":
            self.report.update(pred, points, visible, extra[0] if extra else None)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/nme", self.nme[stage], on_step=False, on_epoch=True, prog_bar=True)
        self.keep_samples(stage, batch_idx, self.images_for_display(x), points, pred, visible)

    def on_test_epoch_end(self) -> None:
        """test/nme_<subset>, test/fr_10, test/auc_10 and their per-subset values."""
        report = self.report.compute()
        report.pop("nme", None)  # logged as test/nme by the step metric
        self.log_dict({f"test/{name}": value for name, value in report.items()})
        self.report.reset()
        super().on_test_epoch_end()

    def figure(self, samples, title):
        images, true, pred, visible = samples
        return keypoint_figure(images, true, pred, visible, title=title)
