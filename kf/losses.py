"""The InfoMax-Bottleneck losses of Knowledge Factorization, as pure functions computed in
float32: InfoMax (DV bound, cosine critic), the teacher's targets over a task's classes and
the original's MSE on logits (the KL one is tasks.distill.losses.kd_loss), label-smoothed CE,
and InfoMin (KL of the batch Gaussian of a task feature to N(0, I), or the per-sample VIB KL
of a Gaussian TSN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.errors import UserError

INFOMAX_VARIANTS = ("original", "standard")
KD_TARGETS = ("tempered_groups", "original")
KD_LOSSES = ("kl", "mse")


def cosine_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """(B, B) cosine similarities of the rows of a and b, normalised as the original
    (x / (||x|| + eps))."""
    a = a.float().flatten(1)
    b = b.float().flatten(1)
    a = a / (a.norm(dim=1, keepdim=True) + eps)
    b = b / (b.norm(dim=1, keepdim=True) + eps)
    return a @ b.T


def infomax_loss(a: torch.Tensor, b: torch.Tensor, variant: str = "original") -> torch.Tensor:
    """Minus the Donsker-Varadhan bound E_j - log E_m on I(a; b), with a cosine critic and
    positives on the diagonal (sample i of a with sample i of b).

    `original` copies the released code: E_j = trace(S) / B^2 and E_m = mean of
    exp(S * (1 - I)) over all B^2 entries, so the masked diagonal adds B ones inside the
    log. `standard` uses E_j = trace(S) / B and E_m = the mean of exp(S_ij) over i != j."""
    s = cosine_matrix(a, b)
    n = s.shape[0]
    eye = torch.eye(n, device=s.device, dtype=s.dtype)
    if variant == "original":
        joint = (s * eye).mean()
        marginal = torch.exp(s * (1 - eye)).mean()
    elif variant == "standard":
        if n < 2:
            raise UserError(
                "The standard InfoMax needs a batch of at least 2 samples (negatives are the other samples)."
            )
        joint = torch.diagonal(s).mean()
        marginal = torch.exp(s).masked_select(eye == 0).mean()
    else:
        raise UserError(f"Unknown InfoMax variant '{variant}'. Use one of {list(INFOMAX_VARIANTS)}.")
    return -(joint - torch.log(marginal))


def group_logits(teacher_logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(B, task classes): logsumexp of the teacher's logits over each group of its classes.
    `groups` is the (teacher classes, task classes) 0/1 matrix. Its softmax is the teacher's
    softmax summed into the groups; for groups of one class it returns the logits unchanged."""
    mask = torch.log(groups.to(device=teacher_logits.device, dtype=torch.float32))  # 0 inside a group, -inf outside
    return torch.logsumexp(teacher_logits.float().unsqueeze(2) + mask.unsqueeze(0), dim=1)


def kd_target(
    teacher_logits: torch.Tensor, groups: torch.Tensor, temperature: float, mode: str = "tempered_groups"
) -> torch.Tensor:
    """The teacher's distribution over a task's classes at `temperature`.

    `tempered_groups` sums the probabilities into groups at T = 1 and then tempers the
    group distribution: softmax(group_logits / T). It keeps the teacher's decision: the group
    it prefers keeps the largest target at any T. `original` tempers first and then sums,
    softmax(logits / T) @ groups, as the released code does for every output; with big groups
    (one-vs-rest) it pulls positives to "rest": a 10-class teacher with a margin of 10
    gives its class 0.232 at T = 10. Both are the plain softmax(logits / T) for groups of one class."""
    if mode == "tempered_groups":
        return torch.softmax(group_logits(teacher_logits, groups) / temperature, dim=1)
    if mode == "original":
        probs = torch.softmax(teacher_logits.float() / temperature, dim=1)
        return probs @ groups.to(teacher_logits.device, torch.float32)
    raise UserError(f"Unknown KD target '{mode}'. Use one of {list(KD_TARGETS)}.")


def mse_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and teacher logits over all entries (the original's
    `Logits` KD, Ba & Caruana 2014), used by its dSprites configuration."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def label_smooth_ce(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1, classy_vision: bool = True
) -> torch.Tensor:
    """Cross-entropy against y * (1 - eps) + eps / K. mmcls' "classy_vision" mode (the
    original's) uses eps = smoothing / (1 + smoothing); otherwise eps = smoothing."""
    eps = smoothing / (1 + smoothing) if classy_vision else smoothing
    return F.cross_entropy(logits.float(), target, label_smoothing=eps)


def infomin_loss(h: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) averaged over dimensions, where mu and sigma^2 are
    the batch mean and unbiased batch variance of h (B, D): the original's bottleneck."""
    h = h.float()
    mu = h.mean(0)
    log_var = torch.log(h.var(0, unbiased=True))
    return -0.5 * torch.mean(1 + log_var - mu**2 - log_var.exp())


def vib_infomin_loss(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_b, diag exp(log_var_b)) || N(0, I)) of every sample, summed over dimensions and
    averaged over the batch: the VIB bottleneck of a Gaussian TSN (the original's 2-D branch)."""
    mu, log_var = mu.float(), log_var.float()
    return torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
