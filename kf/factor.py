"""Factor networks: a shared common-knowledge network (CKN, any timm model) giving z, and per
task k a task-specific network (TSN_k, a small timm model plus a bias-free linear map) giving
h_k; factor k predicts task k with head_k(z + h_k). The TSNs can run vectorised (one
torch.func.vmap call over their stacked weights) instead of one after another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from kf.teacher import pool
from tasks.errors import UserError
from tasks.models.backbones import create_backbone


def output_width(model: nn.Module) -> int:
    """Width of what a timm model with num_classes=0 returns: the pre-logits hidden layer
    where it has one (MobileNetV3's conv_head: 1024 for 288 `num_features`), else num_features."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class TaskSpecificNet(nn.Module):
    """TSN_k: timm backbone -> pooled feature -> Linear(width -> dim, no bias) = h_k.

    `gaussian`: the linear map gives (mu, log var) of a diagonal Gaussian code, as the
    original's SimpleGaussianConv64 on dSprites; the TSN's code is then mu (training samples
    from the Gaussian, see FactorNetwork.sample)."""

    def __init__(self, backbone: dict[str, Any], dim: int, gaussian: bool = False):
        super().__init__()
        self.backbone = create_backbone(**backbone, num_classes=0)
        self.dim, self.gaussian = dim, gaussian
        self.fc = nn.Linear(output_width(self.backbone), 2 * dim if gaussian else dim, bias=False)

    def forward(self, x: torch.Tensor, stats: bool = False) -> torch.Tensor:
        """h_k (B, dim); with `stats` the raw output: (mu, log var) concatenated for a Gaussian TSN."""
        out = self.fc(self.backbone(x))
        return out if stats or not self.gaussian else out[:, : self.dim]


def run_stacked(modules: Sequence[nn.Module], x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """(K, B, ...) outputs of K modules of one architecture on the same input, as one vmap
    over their stacked weights (`kwargs` go to every forward). Gradients reach every module's
    own parameters; the running statistics their BatchNorms update are written back."""
    template = modules[0]
    names = [n for n, _ in template.named_parameters()]
    buffer_names = [n for n, _ in template.named_buffers()]
    own = [dict(m.named_parameters()) for m in modules]
    own_buffers = [dict(m.named_buffers()) for m in modules]
    params = {n: torch.stack([p[n] for p in own]) for n in names}
    buffers = {n: torch.stack([b[n] for b in own_buffers]) for n in buffer_names}

    def one(p, b, inp):
        return functional_call(template, (p, b), (inp,), kwargs)

    out = vmap(one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
    if template.training:
        with torch.no_grad():
            for n in buffer_names:
                for k, b in enumerate(own_buffers):
                    b[n].copy_(buffers[n][k])
    return out


class FactorNetwork(nn.Module):
    """The CKN, the TSNs and the per-task heads (what assembly uses; training-only parts such
    as the InfoMax projections and auxiliary heads live in the LightningModule)."""

    def __init__(
        self,
        ckn: dict[str, Any],
        tsn: dict[str, Any],
        num_classes: Sequence[int],
        feature_dim: int = 0,
        stages: Sequence[int] = (-3, -2, -1),
        vectorize: bool = True,
        gaussian_tsn: bool = False,
    ):
        super().__init__()
        self.ckn = create_backbone(**ckn, num_classes=feature_dim)
        self.dim = feature_dim or output_width(self.ckn)
        self.gaussian_tsn = gaussian_tsn
        self.tsns = nn.ModuleList(TaskSpecificNet(tsn, self.dim, gaussian_tsn) for _ in num_classes)
        self.heads = nn.ModuleList(nn.Linear(self.dim, n) for n in num_classes)
        n_stages = len(self.ckn.feature_info)
        bad = [s for s in stages if not -n_stages <= int(s) < n_stages]
        if bad:
            raise UserError(
                f"model.ckn_stages {bad} out of range: the CKN has {n_stages} feature stages "
                f"({[i['module'] for i in self.ckn.feature_info]}); use indices in {-n_stages}..{n_stages - 1}."
            )
        self.stages = [int(s) % n_stages for s in stages]
        self.vectorize = vectorize

    def common(self, x: torch.Tensor, with_stages: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """z (B, D) and, if asked, the pooled CKN stage features for InfoMax."""
        if not with_stages:
            return self.ckn(x), []
        final, stages = self.ckn.forward_intermediates(x, indices=self.stages)
        return self.ckn.forward_head(final), [pool(s) for s in stages]

    def specific(self, x: torch.Tensor, task_ids: Sequence[int] | None = None, stats: bool = False) -> torch.Tensor:
        """(K, B, D): h_k of the chosen tasks (all by default); with `stats`, (K, B, 2D)
        (mu, log var) of Gaussian TSNs."""
        modules = [self.tsns[k] for k in (range(len(self.tsns)) if task_ids is None else task_ids)]
        if self.vectorize and len(modules) > 1:
            return run_stacked(modules, x, stats=stats)
        return torch.stack([m(x, stats=stats) for m in modules])

    def sample(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, mu, log var) from Gaussian TSN outputs (..., 2D): h = mu + sigma * eps while
        training (the reparameterisation), h = mu in eval mode."""
        mu, log_var = stats.float().chunk(2, dim=-1)
        h = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu) if self.training else mu
        return h.to(stats.dtype), mu, log_var

    def logits(self, z: torch.Tensor, h: torch.Tensor) -> list[torch.Tensor]:
        return [head(z + h_k) for head, h_k in zip(self.heads, h)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z, _ = self.common(x)
        return self.logits(z, self.specific(x))

    def factor_logits(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Factor k on its own: head_k(CKN(x) + TSN_k(x)), every module run directly."""
        return self.heads[k](self.ckn(x) + self.tsns[k](x))
