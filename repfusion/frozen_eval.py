"""Frozen-feature evaluation as self-supervised papers do it: a representation is frozen, its
pooled features of the labelled training images are the only labelled data, and it is
scored on the test images by
  a linear probe  multinomial logistic regression on the standardised features, one fixed
                  recipe for every row (L-BFGS, weight decay `linear.weight_decay`, no tuning
                  on test), `test/linear_acc`;
  k-NN            cosine, k nearest labelled images voting with exp(sim / 0.07), `test/knn_acc`.

The representation is a timm backbone (`backbone.init`: a stage-1 export, a stage-2
classifier export, or null: random init) or, for the reference row, a diffusion teacher's
pooled feature at one t (`teacher.source` with `teacher_t` or `teacher_t_from`, an oracle run).
The labelled images come from the data config, so `data.labels_per_class` sets the budget.

    python -m repfusion.frozen_eval data=fashion_mnist data.labels_per_class=10 \
        backbone.init=<stage-1 run>/export/backbone.safetensors
    python -m repfusion.frozen_eval data=fashion_mnist data.labels_per_class=10 \
        teacher.source=<ddpm run>/export/unet teacher_t_from=<oracle run>
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (resolvers)
from repfusion.knn import knn_classify
from repfusion.oracle import best_timestep, pooled_features, resolve_source, split_tensors
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.models.backbones import create_backbone
from tasks.run.instantiate import build
from tasks.run.stage_app import run_stage


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS (deterministic, no learning rate),
    mean cross-entropy + weight_decay * |W|^2 / 2, on features already standardised."""
    num_classes = int(train_y.max()) + 1
    layer = torch.nn.Linear(train_x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)  # a convex problem: start anywhere
    x, y = train_x.double(), train_y
    # a short history: each step costs 4 x history dot products, which dominate on a small problem
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def evaluate_features(
    train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, cfg: DictConfig
) -> dict[str, float]:
    """test/linear_acc and test/knn_acc of frozen features (standardised by the train features' statistics)."""
    mean, std = train_f.mean(0), train_f.std(0, correction=0) + 1e-6
    layer = fit_linear((train_f - mean) / std, train_y, cfg.linear.weight_decay, cfg.linear.max_iter)
    with torch.no_grad():
        linear = (layer(((test_f - mean) / std).double()).argmax(1) == test_y).double().mean().item()
    knn = (knn_classify(train_f, train_y, test_f, cfg.knn.k, cfg.knn.temperature) == test_y).double().mean().item()
    return {"test/linear_acc": linear, "test/knn_acc": knn}


@torch.no_grad()
def backbone_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, C) pooled features of the frozen backbone (eval mode: BatchNorm uses its statistics)."""
    model.eval()
    return torch.cat([model(chunk).float() for chunk in images.split(batch_size)])


def features_of(cfg: DictConfig, train_x: torch.Tensor, test_x: torch.Tensor, datamodule):
    """(train features, test features, what was evaluated) of the backbone or the teacher, from
    normalised images."""
    if cfg.teacher.source is None:
        torch.manual_seed(cfg.seed)  # the random-init row's weights
        model = create_backbone(**OmegaConf.to_container(cfg.backbone, resolve=True), num_classes=0)
        size = cfg.feature_batch_size
        return (
            backbone_features(model, train_x, size),
            backbone_features(model, test_x, size),
            {
                "representation": "backbone",
                "init": cfg.backbone.init,
            },
        )
    if (cfg.teacher_t is None) == (cfg.teacher_t_from is None):
        raise UserError(
            "A teacher is evaluated at one t: set exactly one of teacher_t=<t> or teacher_t_from=<oracle run>."
        )
    t = int(cfg.teacher_t) if cfg.teacher_t is not None else best_timestep(cfg.teacher_t_from)
    source = resolve_source(cfg)
    teacher = build("teacher", OmegaConf.merge(cfg.teacher, {"source": source}))
    teacher.set_input_normalization(datamodule)
    teacher.eval().requires_grad_(False)
    size = cfg.feature_batch_size
    train_f, test_f = pooled_features(teacher, train_x, t, size), pooled_features(teacher, test_x, t, size)
    return train_f, test_f, {"representation": "teacher", "teacher": source, "t": t}


def run(cfg: DictConfig) -> dict[str, Any]:
    datamodule = build("data", cfg.data)
    datamodule.setup("fit")
    train_x, train_y = split_tensors(datamodule.train_set, None)
    test_x, test_y = split_tensors(datamodule.test_set, cfg.test_images)  # null: every test image
    if bool((train_y < 0).any()):
        raise UserError("frozen_eval fits on labelled images only: set data.unlabelled=drop.")
    train_f, test_f, what = features_of(cfg, datamodule.normalize(train_x), datamodule.normalize(test_x), datamodule)
    return {
        **what,
        "test": evaluate_features(train_f, train_y, test_f, test_y, cfg),
        "labels_used": datamodule.labels_used,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="repfusion/frozen_eval")
def main(cfg: DictConfig) -> None:
    result = run_stage("repfusion_frozen_eval", cfg, lambda cfg, out: run(cfg))
    print("frozen evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items()))


def command() -> None:
    """`python -m repfusion.frozen_eval`: the command line and config are checked first."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "repfusion/frozen_eval")


if __name__ == "__main__":
    command()
