"""What library signatures do not say about their parameters (torch optimisers, Lightning's
Trainer and callbacks, diffusers' U-Net): ranges, choices and patterns, one explicit rule per
(class, parameter). A rule of a class also holds for its subclasses (every torch optimiser, the
project's ModelCheckpoint). The project's own modules say theirs on their signatures instead
(`Annotated[float, Range(0, 1)]`, `Literal[...]`, `Choices("pkg.module.CONSTANT")`, tasks/config/types.py)."""

from __future__ import annotations

from tasks.config.types import (
    AT_LEAST_ONE,
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    UNBOUNDED_OR_COUNT,
    Choices,
    Pattern,
    Range,
)

_EPS = Range(0, low_open=True, what="an optimiser's epsilon must be positive")
_TRAINER = "pytorch_lightning.Trainer"
_CHECKPOINT = "pytorch_lightning.callbacks.ModelCheckpoint"
_UNET = "diffusers.UNet2DModel"

# (class or function as users name it, parameter) -> Range
RANGES: dict[tuple[str, str], Range] = {
    ("torch.optim.Optimizer", "lr"): POSITIVE,
    ("torch.optim.Optimizer", "weight_decay"): Range(0, what="a weight decay cannot be negative"),
    ("torch.optim.Optimizer", "momentum"): Range(0, 1, what="the fraction of the last step kept"),
    ("torch.optim.Optimizer", "eps"): _EPS,
    (_TRAINER, "devices"): UNBOUNDED_OR_COUNT,
    (_TRAINER, "num_nodes"): AT_LEAST_ONE,
    (_TRAINER, "max_epochs"): UNBOUNDED_OR_COUNT,
    (_TRAINER, "min_epochs"): COUNT,
    (_TRAINER, "max_steps"): UNBOUNDED_OR_COUNT,
    (_TRAINER, "min_steps"): COUNT,
    (_TRAINER, "limit_train_batches"): COUNT,
    (_TRAINER, "limit_val_batches"): COUNT,
    (_TRAINER, "limit_test_batches"): COUNT,
    (_TRAINER, "limit_predict_batches"): COUNT,
    (_TRAINER, "overfit_batches"): COUNT,
    (_TRAINER, "num_sanity_val_steps"): UNBOUNDED_OR_COUNT,
    (_TRAINER, "log_every_n_steps"): AT_LEAST_ONE,
    (_TRAINER, "check_val_every_n_epoch"): AT_LEAST_ONE,
    (_TRAINER, "accumulate_grad_batches"): AT_LEAST_ONE,
    (_TRAINER, "gradient_clip_val"): NON_NEGATIVE,
    (_TRAINER, "reload_dataloaders_every_n_epochs"): COUNT,
    (_CHECKPOINT, "save_top_k"): UNBOUNDED_OR_COUNT,
    (_CHECKPOINT, "every_n_train_steps"): COUNT,
    (_CHECKPOINT, "every_n_epochs"): COUNT,
    ("pytorch_lightning.callbacks.EarlyStopping", "patience"): COUNT,
    ("pytorch_lightning.loggers.CSVLogger", "flush_logs_every_n_steps"): AT_LEAST_ONE,
    (_UNET, "sample_size"): AT_LEAST_ONE,
    (_UNET, "in_channels"): AT_LEAST_ONE,
    (_UNET, "out_channels"): AT_LEAST_ONE,
    (_UNET, "block_out_channels"): AT_LEAST_ONE,
    (_UNET, "layers_per_block"): AT_LEAST_ONE,
    (_UNET, "norm_num_groups"): AT_LEAST_ONE,
    (_UNET, "dropout"): PROBABILITY,
    (_UNET, "num_class_embeds"): COUNT,
    (_UNET, "num_train_timesteps"): AT_LEAST_ONE,
}


def _lightning_names(kind: str) -> tuple:
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    if kind == "accelerator":
        return ("auto", "gpu", *AcceleratorRegistry.available_accelerators())
    return ("auto", *StrategyRegistry.available_strategies())


def lightning_accelerators() -> tuple:
    return _lightning_names("accelerator")


def lightning_strategies() -> tuple:
    return _lightning_names("strategy")


# str parameters whose allowed values the signature does not say (inline, or a dotted path
# to the library's own list).
CHOICES: dict[tuple[str, str], tuple | Choices] = {
    (_CHECKPOINT, "mode"): ("min", "max"),
    ("pytorch_lightning.callbacks.EarlyStopping", "mode"): ("min", "max"),
    ("pytorch_lightning.callbacks.LearningRateMonitor", "logging_interval"): ("step", "epoch", None),
    (_TRAINER, "gradient_clip_algorithm"): ("norm", "value", None),
    (_TRAINER, "accelerator"): Choices("tasks.config.rules.lightning_accelerators"),
    (_TRAINER, "strategy"): Choices("tasks.config.rules.lightning_strategies"),
}
PATTERNS: dict[tuple[str, str], Pattern] = {
    (_TRAINER, "devices"): Pattern(r"auto|-1|\d+|(\d+,)*\d+,?", "auto, a count, -1 or a list of indices"),
}
