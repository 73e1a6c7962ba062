"""The landmark test report as the face-alignment literature gives it: NME, failure rate and
area under the cumulative error curve at a threshold (FR@10 %, AUC@10 % for WFLW), on the
whole test set and on each named subset (WFLW: large pose, expression, illumination,
make-up, occlusion, blur). A sample's subsets are the set bits of its integer tag."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from tasks.dense.nme import average_errors, check_nme_options, image_errors


def failure_rate(nme: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fraction of images whose NME exceeds the threshold."""
    return (nme > threshold).double().mean()


def auc_at(nme: torch.Tensor, threshold: float) -> torch.Tensor:
    """Area under the cumulative error distribution on [0, threshold], divided by the
    threshold: (1 / t) * integral of P(nme <= x) dx = mean over images of max(0, 1 - nme / t).
    Exact; the usual Simpson rule on a 1e-4 grid approximates it."""
    return (1 - nme / threshold).clamp(min=0).double().mean()


class LandmarkReport(Metric):
    """Keeps every test image's normalised error sum, point count and subset tag."""

    full_state_update = False

    def __init__(
        self,
        normalizer: str,
        pair: Sequence[int] | None,
        average: str = "points",
        subsets: Sequence[str] = (),
        threshold: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_nme_options(normalizer, pair, average)
        self.normalizer, self.pair, self.average = normalizer, pair, average
        self.subsets, self.threshold = tuple(subsets), threshold
        for name in ("sums", "counts", "tags"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        visible: torch.Tensor | None = None,
        tags: torch.Tensor | None = None,
    ) -> None:
        sums, counts = image_errors(pred, target, visible, self.normalizer, self.pair)
        self.sums.append(sums)
        self.counts.append(counts)
        self.tags.append(torch.zeros_like(counts, dtype=torch.long) if tags is None else tags.long().reshape(-1))

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        return cat(self.sums), cat(self.counts), cat(self.tags)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"nme", "fr_<t>", "auc_<t>"} on all images, and "<metric>_<subset>" on each subset
        that has images (t in percent, e.g. fr_10)."""
        if isinstance(self.sums, list) and not self.sums:
            return {}
        sums, counts, tags = self._rows()
        percent = f"{100 * self.threshold:g}".replace(".", "p")
        groups = {"": torch.ones_like(tags, dtype=torch.bool)}
        groups.update({f"_{name}": (tags >> bit) & 1 == 1 for bit, name in enumerate(self.subsets)})
        report = {}
        for suffix, chosen in groups.items():
            chosen = chosen & (counts > 0)
            if not chosen.any():
                continue
            per_image = sums[chosen] / counts[chosen]
            report[f"nme{suffix}"] = average_errors(sums[chosen], counts[chosen], self.average).float()
            report[f"fr_{percent}{suffix}"] = failure_rate(per_image, self.threshold).float()
            report[f"auc_{percent}{suffix}"] = auc_at(per_image, self.threshold).float()
        return report
