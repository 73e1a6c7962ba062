"""The rules tasks.config.schema applies beyond what signatures say: ranges by parameter name, exact
ranges and patterns for single parameters, allowed values of str parameters (read from the
modules' own constants), and dict parameters that are handed on as keyword arguments.
Add a rule here when a new parameter needs one; a module may instead annotate its parameter
with `Annotated[..., Range(...) | Choices(...) | Pattern(...)]`."""

from __future__ import annotations

from tasks.config.types import AT_LEAST_ONE, COUNT, POSITIVE, PROBABILITY, UNBOUNDED_OR_COUNT, Choices, Pattern, Range

# (regex on the parameter name, range). The first match wins.
RANGES: list[tuple[str, Range]] = [
    (r"(min_lr|\w+_min_lr|min_lr_ratio)", Range(0, what="a learning-rate floor cannot be negative")),
    (r"(lr|learning_rate|base_lr|\w+_lr)", POSITIVE),
    (r"(max_epochs|max_steps|num_sanity_val_steps|save_top_k)", UNBOUNDED_OR_COUNT),
    (r"(batch_size|eval_batch_size|image_size|accumulate_grad_batches|num_nodes|restarts|max_iter)", AT_LEAST_ONE),
    (
        r"(p|prob|probability|\w+_prob|\w+_p|dropout|\w+_dropout|drop_rate|\w+_drop_rate|drop_path_rate|"
        r"label_smoothing|\w+_fraction|fraction|ema_decay|decay|momentum|mixup|cutmix)",
        PROBABILITY,
    ),
    (
        r"(\w+_size|size|num_\w+|\w+_epochs|\w+_steps|\w+_samples|\w+_batches|\w+_workers|\w+_images|k|K|top_k|knn_k|"
        r"\w+_k|bins|\w+_bins|depth|\w+_every_n_\w+|every_n_\w+|warmup\w*|patience|seed|\w+_seed|weight_decay|"
        r"\w+_weight|eps|epsilon|temperature|gamma|power|\w+_channels|channels|width|\w+_width|degrees|"
        r"translate_px)",
        COUNT,
    ),
]
EXACT: dict[tuple[str, str], Range] = {
    ("pytorch_lightning.Trainer", "devices"): UNBOUNDED_OR_COUNT,
    ("pytorch_lightning.Trainer", "log_every_n_steps"): AT_LEAST_ONE,
    ("pytorch_lightning.Trainer", "check_val_every_n_epoch"): AT_LEAST_ONE,
    ("torch.optim.Adam", "eps"): Range(0, low_open=True, what="Adam's epsilon must be positive"),
    ("torch.optim.AdamW", "eps"): Range(0, low_open=True, what="Adam's epsilon must be positive"),
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


# str parameters whose allowed values the signature does not say. A dotted path names the
# module constant that lists them (the module keeps its own check for Python callers).
CHOICES: dict[tuple[str, str], tuple | Choices] = {
    ("tasks.training.checkpointing.ModelCheckpoint", "mode"): ("min", "max"),
    ("pytorch_lightning.callbacks.ModelCheckpoint", "mode"): ("min", "max"),  # a user's config may name it
    ("pytorch_lightning.callbacks.EarlyStopping", "mode"): ("min", "max"),
    ("pytorch_lightning.callbacks.LearningRateMonitor", "logging_interval"): ("step", "epoch", None),
    ("pytorch_lightning.Trainer", "gradient_clip_algorithm"): ("norm", "value", None),
    ("pytorch_lightning.Trainer", "accelerator"): Choices("tasks.config.rules.lightning_accelerators"),
    ("pytorch_lightning.Trainer", "strategy"): Choices("tasks.config.rules.lightning_strategies"),
    ("kf.teacher.TeacherSpec", "bn_mode"): Choices("kf.teacher.BN_MODES"),
    ("kf.module.KFModule", "infomax_variant"): Choices("kf.losses.INFOMAX_VARIANTS"),
    ("kf.module.KFModule", "kd_target"): Choices("kf.losses.KD_TARGETS"),
    ("kf.module.KFModule", "kd_loss"): Choices("kf.losses.KD_LOSSES"),
    ("kf.module.KFModule", "dci_importance"): Choices("kf.disentanglement.IMPORTANCES"),
    ("kf.task_module.TaskModule", "task_reduction"): Choices("kf.task_module.REDUCTIONS"),
    ("dery.module.ReassembledModule", "mode"): Choices("dery.module.MODES"),
    ("dery.module.ReassembledModule", "init"): Choices("dery.module.INITS"),
    ("repfusion.policy.TimestepPolicy", "mode"): Choices("repfusion.policy.MODES"),
    ("repfusion.policy.TimestepPolicy", "baseline"): Choices("repfusion.policy.BASELINES"),
    ("repfusion.policy.TimestepPolicy", "entropy_schedule"): Choices("repfusion.policy.ENTROPY_SCHEDULES"),
    ("repfusion.policy.TimestepPolicy", "input_range"): Choices("repfusion.policy.INPUT_RANGES"),
    ("repfusion.policy.TimestepPolicy", "probe_norm"): Choices("repfusion.probe.PROBE_NORMS"),
    ("repfusion.teacher.DiffusionTeacher", "dtype"): Choices("repfusion.teacher._DTYPES"),
    ("tasks.dense.landmarks.LandmarkModule", "decode"): Choices("tasks.dense.landmarks.DECODERS"),
    ("tasks.dense.landmarks.LandmarkModule", "target_encoding"): Choices("tasks.dense.heatmap.ENCODINGS"),
    ("tasks.dense.landmarks.LandmarkModule", "nme_average"): Choices("tasks.dense.nme.AVERAGES"),
    ("tasks.dense.landmarks.LandmarkModule", "head_init"): Choices("tasks.dense.heads.init.HEAD_INITS"),
    ("tasks.dense.segmentation.SegmentationModule", "loss_average"): Choices("tasks.dense.segmentation.LOSS_AVERAGES"),
}
PATTERNS: dict[tuple[str, str], Pattern] = {
    ("pytorch_lightning.Trainer", "devices"): Pattern(
        r"auto|-1|\d+|(\d+,)*\d+,?", "auto, a count, -1 or a list of indices"
    ),
}
# (target, dict parameter) -> the callable that receives the dict as keyword arguments.
FORWARDED: dict[tuple[str, str], str] = {
    ("tasks.models.classification.ClassificationModule", "backbone"): "tasks.models.backbones.create_backbone",
    ("tasks.dense.module.DenseModule", "backbone"): "tasks.models.backbones.create_backbone",
    ("repfusion.module.RepFusionModule", "student"): "tasks.models.backbones.create_backbone",
    ("kf.module.KFModule", "ckn"): "tasks.models.backbones.create_backbone",
    ("kf.module.KFModule", "tsn"): "tasks.models.backbones.create_backbone",
    ("kf.module.KFModule", "teacher"): "kf.teacher.TeacherSpec",
}
