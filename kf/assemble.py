"""Assembly: a multi-task network built from trained factors with no fine-tuning. The CKN
runs once, then each chosen TSN and head. It saves and loads as one model (safetensors + a
JSON spec) and reports its parameters (S + sum of s_k) against separate factor networks.

    python -m kf.assemble <run dir>/export/assembled.json --tasks class0,class3 --out <dir>
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from kf.factor import FactorNetwork, TaskSpecificNet
from kf.task_spec import TaskSpec
from tasks.errors import UserError
from tasks.io.cards import Card, load_card, write_card
from tasks.io.files import atomic_path, complete_folder, read_safetensors
from tasks.io.places import require_writable
from tasks.models.backbones import count_parameters, create_backbone, small_stem_name
from tasks.run.boundary import guarded

KIND = "kf_assembled"


class AssembledNetwork(nn.Module):
    """CKN once, then TSN_k and head_k for every task it holds; outputs logits in task order."""

    def __init__(
        self, ckn: nn.Module, tsns: Sequence[nn.Module], heads: Sequence[nn.Module], specs: Sequence[TaskSpec]
    ):
        super().__init__()
        if not (len(tsns) == len(heads) == len(specs)):
            raise ValueError("one TSN and one head per task")
        self.ckn = ckn
        self.tsns = nn.ModuleList(tsns)
        self.heads = nn.ModuleList(heads)
        self.specs = list(specs)

    @property
    def task_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def features(self, x: torch.Tensor, drop: Sequence[str] = ()) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """z from the CKN (run once) and h_k from every TSN (None for tasks in `drop`)."""
        z = self.ckn(x)
        return z, [None if spec.name in drop else tsn(x) for tsn, spec in zip(self.tsns, self.specs)]

    def outputs(self, z: torch.Tensor, h: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """head_k(z + h_k); a task without h_k (its TSN dropped) reads z alone."""
        return [head(z) if h_k is None else head(z + h_k) for head, h_k in zip(self.heads, h)]

    def forward(self, x: torch.Tensor, drop: Sequence[str] = ()) -> list[torch.Tensor]:
        """Logits of every task, in task order."""
        return self.outputs(*self.features(x, drop))

    def index(self, names: Sequence[str]) -> list[int]:
        unknown = [n for n in names if n not in self.task_names]
        if unknown:
            raise UserError(f"Unknown tasks {unknown}; this network holds {self.task_names}.")
        return [self.task_names.index(n) for n in names]

    def subset(self, names: Sequence[str]) -> AssembledNetwork:
        """A new network with only the named tasks (copied modules, no training)."""
        ids = self.index(names)
        return AssembledNetwork(
            copy.deepcopy(self.ckn),
            [copy.deepcopy(self.tsns[i]) for i in ids],
            [copy.deepcopy(self.heads[i]) for i in ids],
            [self.specs[i] for i in ids],
        ).eval()

    def parameter_report(self) -> dict[str, int]:
        """S (CKN), s_k (TSN_k + head_k), the assembled total S + sum s_k, and n separate
        factor networks sum (S + s_k)."""
        big = count_parameters(self.ckn)
        small = [count_parameters(t) + count_parameters(h) for t, h in zip(self.tsns, self.heads)]
        return {
            "ckn": big,
            "tsn_mean": round(sum(small) / len(small)),
            "assembled": big + sum(small),
            "separate": len(small) * big + sum(small),
            "tasks": len(small),
        }

    def save(self, export_dir: str | Path, name: str = "assembled") -> dict[str, str]:
        export_dir = Path(export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
        weights = export_dir / f"{name}.safetensors"
        with atomic_path(weights) as temp:  # whole or not at all; the card comes after it
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(temp))
        card = write_card(
            export_dir,
            KIND,
            {
                "weights": weights.name,
                "ckn": self.ckn.kt_spec,
                "tsn": self.tsns[0].backbone.kt_spec,
                "dim": self.heads[0].in_features,
                "gaussian_tsn": bool(getattr(self.tsns[0], "gaussian", False)),
                "tasks": [s.as_dict() for s in self.specs],
                "parameters": self.parameter_report(),
                "load": "kf.assemble.load_assembled('<this file>')",
            },
            name=f"{name}.json",
        )
        return {"assembled": str(card), "assembled_weights": str(weights)}


def assemble(
    factors: FactorNetwork, specs: Sequence[TaskSpec], task_ids: Sequence[int] | None = None
) -> AssembledNetwork:
    """The multi-task network of the chosen factors (all by default), copied, in eval mode."""
    ids = list(range(len(factors.tsns))) if task_ids is None else list(task_ids)
    bad = [i for i in ids if not 0 <= i < len(factors.tsns)]
    if bad or not ids:
        raise UserError(f"Task ids {bad or ids} are not factors of this network (0..{len(factors.tsns) - 1}).")
    return AssembledNetwork(
        copy.deepcopy(factors.ckn),
        [copy.deepcopy(factors.tsns[i]) for i in ids],
        [copy.deepcopy(factors.heads[i]) for i in ids],
        [specs[i] for i in ids],
    ).eval()


def _timm(spec: dict, **extra) -> dict:
    """create_backbone arguments that rebuild a backbone from its kt_spec."""
    if spec["timm_name"].endswith("_smallstem"):
        small_stem_name(spec["timm_name"])
    return {"name": spec["timm_name"], **{k: v for k, v in spec["timm_kwargs"].items() if k != "num_classes"}, **extra}


def assembled_from_card(card: Card) -> AssembledNetwork:
    """The loader of kind kf_assembled (entry point of kt.cards): the AssembledNetwork its card
    describes, weights from safetensors only, in eval mode."""
    fields = card.require("ckn", "tsn", "dim", "tasks", "weights").fields
    specs = [TaskSpec(t["name"], t["factor"], tuple(tuple(g) for g in t["groups"])) for t in fields["tasks"]]
    ckn = create_backbone(**_timm(fields["ckn"], num_classes=fields["ckn"]["timm_kwargs"].get("num_classes", 0)))
    tsns = [TaskSpecificNet(_timm(fields["tsn"]), fields["dim"], fields.get("gaussian_tsn", False)) for _ in specs]
    heads = [nn.Linear(fields["dim"], s.num_classes) for s in specs]
    net = AssembledNetwork(ckn, tsns, heads, specs)
    net.load_state_dict(read_safetensors(card.weights(), f"Weights of {card.path}"))
    return net.eval()


def load_assembled(card_path: str | Path) -> AssembledNetwork:
    """A saved AssembledNetwork from its card (<run dir>/export/assembled.json, or a folder
    that kf.assemble --out wrote), in eval mode."""
    return load_card(card_path, kinds_allowed=(KIND,))


@guarded("kf.assemble")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("card", help="an assembled.json written by a KF run")
    parser.add_argument("--tasks", required=True, help="comma-separated task names to keep")
    parser.add_argument("--out", required=True, help="folder for the new assembled network")
    args = parser.parse_args(argv)
    try:
        out = require_writable(args.out, "The --out folder", "Pass --out <a new folder you can write>.")
        mine = {"assembled.json", "assembled.safetensors"}
        if out.is_dir() and (others := sorted(p.name for p in out.iterdir() if p.name not in mine)):
            raise UserError(
                f"--out {out} holds other files ({others[:5]}), and kf.assemble replaces the whole folder. "
                "Name a new or empty folder (or one an earlier kf.assemble wrote)."
            )
        net = load_assembled(args.card).subset([t for t in args.tasks.split(",") if t])
        with complete_folder(out) as temp:  # all or nothing: a full disk or a kill leaves the old folder
            written = {k: str(out / Path(v).name) for k, v in net.save(temp).items()}
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps({"tasks": net.task_names, "parameters": net.parameter_report(), **written}, indent=2))


if __name__ == "__main__":
    main()
