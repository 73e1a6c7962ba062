"""Leave-one-out k-nearest-neighbour accuracy of features against labels: a label-free
representation's quality, measured on a held-out split without training anything."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """Each sample is classified by its k most cosine-similar *other* samples, each voting
    for its label with its similarity; returns the share classified correctly."""
    n = features.shape[0]
    if n < 2:
        return float("nan")
    z = F.normalize(features.float().flatten(1), dim=1)
    similarity = z @ z.t()
    similarity.fill_diagonal_(-float("inf"))
    top, index = similarity.topk(min(k, n - 1), dim=1)
    num_classes = int(labels.max()) + 1
    votes = torch.zeros(n, num_classes, device=z.device).scatter_add_(1, labels[index], top)
    return (votes.argmax(1) == labels).float().mean().item()


@torch.no_grad()
def knn_classify(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, k: int = 20, temperature: float = 0.07
) -> torch.Tensor:
    """The label of each query by its k most cosine-similar bank samples, each voting with
    exp(similarity / temperature): the weighted k-NN of self-supervised papers (a labelled
    training bank, test queries). Returns (Q,) predicted labels."""
    bank = F.normalize(bank.float().flatten(1), dim=1)
    query = F.normalize(query.float().flatten(1), dim=1)
    top, index = (query @ bank.t()).topk(min(k, bank.shape[0]), dim=1)
    num_classes = int(bank_labels.max()) + 1
    votes = torch.zeros(query.shape[0], num_classes).scatter_add_(1, bank_labels[index], (top / temperature).exp())
    return votes.argmax(1)
