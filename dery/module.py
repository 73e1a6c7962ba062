"""ReassembledModule: trains the network of a DeRy spec on a classification task.

  mode=frozen  only the new stem, the adapters and the head learn (the paper's FZ); the
               blocks keep the zoo's BN statistics (update_block_bn=true: the original,
               whose frozen blocks stay in train mode and update them)
  mode=full    everything learns from the start (the paper's FT)
  init=random  the same network with random blocks, trained fully: the control that says
               what the zoo's weights are worth

Everything else (loss, metrics, optimiser, schedule) is the ClassificationModule's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
from safetensors.torch import save_file

from dery.plots import architecture_figure
from dery.spec import build_network, load_spec
from tasks.config.types import Choices, Count, KeywordsOf, Probability
from tasks.errors import UserError
from tasks.io.cards import Card, load_card, write_card
from tasks.io.checkpoints import load_state_dict_file
from tasks.models.backbones import count_parameters
from tasks.models.classification import ClassificationModule
from tasks.training.plots import log_figure

KIND = "dery-reassembled"
MODES = ("frozen", "full")
INITS = ("zoo", "random")


class ReassembledModule(ClassificationModule):
    def __init__(
        self,
        spec: str,
        num_classes: Count,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: Probability = 0.0,
        mixup: Annotated[dict[str, Any] | None, KeywordsOf("tasks.data.toolbox.MixupCutmix")] = None,
        ema_decay: Probability | None = None,
        mode: Annotated[str, Choices("dery.module.MODES")] = "frozen",
        update_block_bn: bool = False,
        init: Annotated[str, Choices("dery.module.INITS")] = "zoo",
    ):
        if mode not in MODES:
            raise UserError(f"model.mode='{mode}' is unknown; use one of {list(MODES)}.")
        if init not in INITS:
            raise UserError(f"model.init='{init}' is unknown; use one of {list(INITS)}.")
        if init == "random" and mode == "frozen":
            raise UserError("model.init=random with model.mode=frozen would freeze random blocks; use model.mode=full.")
        super().__init__(
            {"spec": spec, "mode": mode, "update_block_bn": update_block_bn, "init": init},
            num_classes,
            optimizer,
            scheduler,
            label_smoothing,
            mixup,
            ema_decay,
        )

    def build_net(self, backbone: dict[str, Any], num_classes: int) -> torch.nn.Module:
        self.spec = load_spec(backbone["spec"])
        if self.spec["num_classes"] != num_classes:
            raise UserError(
                f"The spec {backbone['spec']} was searched with a {self.spec['num_classes']}-class head "
                f"(its budget counts it) but model.num_classes={num_classes}. "
                f"Re-run dery.search with num_classes={num_classes}."
            )
        from_zoo = backbone.get("init", "zoo") == "zoo"
        net = build_network(self.spec, pretrained=from_zoo, random_seed=None if from_zoo else torch.initial_seed())
        return net.freeze_blocks(backbone["mode"] == "frozen", backbone["update_block_bn"])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        log_figure(self.trainer, architecture_figure(self.spec), "architecture")

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """model.safetensors (the whole network) and model.json, its card of kind dery-reassembled
        (the spec that rebuilds it)."""
        export_dir = Path(export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
        weights = export_dir / "model.safetensors"
        state = self.evaluated_net.state_dict()  # the EMA with model.ema_decay
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(weights))
        card = write_card(
            export_dir,
            KIND,
            {
                "weights": weights.name,
                "mode": self.hparams.backbone["mode"],
                "init": self.hparams.backbone.get("init", "zoo"),
                "params": self.spec["params"],
                "flops": self.spec["flops"],
                "trainable_params": count_parameters(self.net, trainable_only=True),
                "load": f"dery.module.load_reassembled('{export_dir}')",
                "spec": self.spec,
            },
            name="model.json",
        )
        return {"weights": str(weights), "card": str(card)}


def reassembled_from_card(card: Card) -> torch.nn.Module:
    """The loader of kind dery-reassembled (entry point of kt.cards): the network its spec
    builds, with the exported weights (no zoo weights needed), in eval mode."""
    card.require("spec", "weights")
    net = build_network(card.fields["spec"], pretrained=False)
    net.load_state_dict(load_state_dict_file(card.weights(), what=f"Weights of export card {card.path}"))
    return net.eval()


def load_reassembled(path: str | Path) -> torch.nn.Module:
    """A trained reassembled network from its export folder or card (any export this module wrote)."""
    return load_card(path, kinds_allowed=(KIND,))
