"""The training-free scores a reassembly search can rank candidates by (`proxy.name`), and
what each needs:

  naswot  the paper's: log|det K| of the binary activation codes (dery/proxy.py)   forward pass
  params  the parameter count of the exact network (dery/plan.py)                  additive
  flops   its FLOPs on one image (FlopCounterMode, dery/plan.py)                   additive
  knn     leave-one-out k-NN accuracy of its pooled features (dery/feature_scores)  forward pass, labels
  logme   LogME of the same features (dery/feature_scores.py)                       forward pass, labels

Forward-pass scores run through the prefix tree (dery/prefix_tree.py): a shared prefix of
blocks is evaluated once for each of them. An additive score is a sum over the candidate's
parts, so it needs no forward pass and a MILP can maximise it exactly (dery/milp.py).
Higher is better for every score."""

from __future__ import annotations

import numpy as np
import torch

from dery.feature_scores import knn_accuracy, logme
from dery.plan import Plan
from dery.schemas import ProxyName

PROXIES: tuple[str, ...] = ProxyName.__args__
ADDITIVE = ("params", "flops")
FEATURE = ("knn", "logme")


def feature_score(name: str, features: torch.Tensor | np.ndarray, labels, knn_k: int = 5) -> float:
    """A feature score of (N, D) features for (N,) labels."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else features
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        limits=torch.get_num_threads()
    ):  # BLAS as many threads as the run (oversubscribed SVDs crawl)
        if name == "knn":
            return knn_accuracy(f, y, knn_k)
        if name == "logme":
            return logme(f, y)
    raise ValueError(f"'{name}' is not a feature score; use one of {list(FEATURE)}")


def additive_score(name: str, plan: Plan) -> float:
    """The parameter count or FLOPs of a plan (exact, as the network will be built)."""
    if name not in ADDITIVE:
        raise ValueError(f"'{name}' is not an additive score; use one of {list(ADDITIVE)}")
    return float(getattr(plan, name))
