"""Gaussian heatmaps for top-down landmark detection: encoding keypoints as targets and
decoding heatmaps back to keypoints (argmax with quarter-pixel or Taylor sub-pixel
refinement, or soft-argmax).

Two coordinate conventions (`encoding`):
- "unbiased" (ours): cell j of a stride-s heatmap spans input pixels [j*s, (j+1)*s), so
  input pixel x sits at heatmap coordinate (x + 0.5) / s - 0.5; a horizontal flip of the
  image is exactly a flip of the heatmap.
- "msra" (mmpose's TopDownGenerateTarget and transform_preds): heatmap coordinate x / s.
  Mirroring the image then moves a peak by (s - 1) / s cells more than mirroring the
  heatmap, which mmpose's flip test half-corrects with a one-cell shift (`flip_heatmaps`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tasks.errors import UserError

REFINEMENTS = ("taylor", "quarter", "quarter_per_axis", "none")
ENCODINGS = ("unbiased", "msra")


def pixels_to_heatmap(points: torch.Tensor, stride: float, encoding: str = "unbiased") -> torch.Tensor:
    return points / stride if encoding == "msra" else (points + 0.5) / stride - 0.5


def heatmap_to_pixels(coords: torch.Tensor, stride: float, encoding: str = "unbiased") -> torch.Tensor:
    return coords * stride if encoding == "msra" else (coords + 0.5) * stride - 0.5


def encode_heatmaps(
    points: torch.Tensor, visible: torch.Tensor, size: Sequence[int], stride: float, sigma: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for keypoints (N, K, 2) in input pixels: unnormalised Gaussians (peak 1,
    `sigma` in heatmap cells) on an (H, W) = `size` grid, and (N, K) weights that are 0 for
    invisible keypoints or keypoints outside the heatmap (their target is all zeros)."""
    h, w = size
    centre = pixels_to_heatmap(points.float(), stride)
    ux, uy = centre[..., 0, None, None], centre[..., 1, None, None]
    ys = torch.arange(h, device=points.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=points.device, dtype=torch.float32).view(1, 1, 1, w)
    heat = torch.exp(-((xs - ux) ** 2 + (ys - uy) ** 2) / (2 * sigma**2))
    cx, cy = centre[..., 0], centre[..., 1]
    inside = (cx >= -0.5) & (cx <= w - 0.5) & (cy >= -0.5) & (cy <= h - 0.5)
    weight = (visible > 0) & inside
    return heat * weight[..., None, None], weight.float()


def _blur(heatmaps: torch.Tensor, kernel: int) -> torch.Tensor:
    """Gaussian smoothing that keeps each map's maximum (DARK's modulation)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = torch.arange(kernel, device=heatmaps.device, dtype=heatmaps.dtype) - kernel // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    n, k, h, w = heatmaps.shape
    x = heatmaps.reshape(n * k, 1, h, w)
    x = F.conv2d(F.pad(x, [kernel // 2] * 4, mode="replicate"), g.view(1, 1, 1, -1))
    x = F.conv2d(x, g.view(1, 1, -1, 1)).view(n, k, h, w)
    peak_before = heatmaps.amax(dim=(2, 3), keepdim=True)
    peak_after = x.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    return x * peak_before / peak_after


def decode_heatmaps(
    heatmaps: torch.Tensor, stride: float, refine: str = "taylor", blur_kernel: int = 0, encoding: str = "unbiased"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (N, K, 2) in input pixels and scores (N, K) from heatmaps (N, K, H, W).

    `refine`: "taylor" (one Newton step on the log-heatmap at the argmax, exact for a
    Gaussian; falls back to "quarter_per_axis" where the log-heatmap has no maximum there),
    "quarter" (mmpose's post_process="default": a quarter cell towards the higher neighbour
    on both axes, only where 1 < px < W - 1 and 1 < py < H - 1), "quarter_per_axis" (a
    quarter cell along every axis whose two neighbours exist) or "none".
    `blur_kernel` > 0 smooths predictions before Taylor refinement (DARK). `encoding` is the
    coordinate convention of the heatmaps (see the module docstring)."""
    if refine not in REFINEMENTS:
        raise UserError(f"Unknown heatmap refinement '{refine}'. Choose one of {list(REFINEMENTS)}.")
    heatmaps = heatmaps.float()
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    scores, index = flat.max(dim=-1)
    px, py = index % w, torch.div(index, w, rounding_mode="floor")
    coords = torch.stack([px, py], dim=-1).float()
    if refine == "none":
        return heatmap_to_pixels(coords, stride, encoding), scores

    def at(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
        return maps.reshape(n, k, -1).gather(-1, (y * w + x).unsqueeze(-1)).squeeze(-1)

    # A quarter cell towards the higher neighbour; none along an axis where the peak is on the border.
    inner_x, inner_y = (px > 0) & (px < w - 1), (py > 0) & (py < h - 1)
    if refine == "quarter":  # mmpose's rule: both axes or neither, and never next to the left/top border
        inner_x = inner_y = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    offset = 0.25 * torch.stack(
        [
            torch.sign(at(heatmaps, px + 1, py) - at(heatmaps, px - 1, py)) * inner_x,
            torch.sign(at(heatmaps, px, py + 1) - at(heatmaps, px, py - 1)) * inner_y,
        ],
        dim=-1,
    )
    if refine == "taylor" and h >= 3 and w >= 3:
        maps = _blur(heatmaps, blur_kernel) if blur_kernel > 1 else heatmaps
        log = maps.clamp(min=1e-10).log()
        # Derivatives on a 3x3 stencil, moved inside the map when the peak is on the border
        # (a quadratic fit is exact for a Gaussian wherever it is taken).
        sx, sy = px.clamp(1, w - 2), py.clamp(1, h - 2)
        centre = at(log, sx, sy)
        right, left, down, up = at(log, sx + 1, sy), at(log, sx - 1, sy), at(log, sx, sy + 1), at(log, sx, sy - 1)
        gx, gy = 0.5 * (right - left), 0.5 * (down - up)
        hxx, hyy = right - 2 * centre + left, down - 2 * centre + up
        hxy = 0.25 * (
            at(log, sx + 1, sy + 1) - at(log, sx - 1, sy + 1) - at(log, sx + 1, sy - 1) + at(log, sx - 1, sy - 1)
        )
        det = hxx * hyy - hxy**2
        step = torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=-1)
        newton = -step / det.abs().clamp(min=1e-12).unsqueeze(-1)
        peak = torch.stack([sx, sy], dim=-1).float() + newton - coords
        good = (det > 1e-12) & (hxx < 0) & peak.abs().le(1.0).all(-1)
        offset = torch.where(good.unsqueeze(-1), peak.clamp(-0.5, 0.5), offset)
    return heatmap_to_pixels(coords + offset, stride, encoding), scores


def soft_argmax(
    heatmaps: torch.Tensor, stride: float, beta: float = 10.0, window: int | None = 3, encoding: str = "unbiased"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable decoding: the expected cell under softmax(beta * heatmap), in input
    pixels, with the peak value as score. `window` = r restricts the softmax to the
    (2r+1)^2 cells around the argmax, so a large flat background does not pull the estimate
    towards the centre; None uses the whole map."""
    n, k, h, w = heatmaps.shape
    logits = beta * heatmaps.float()
    scores, index = heatmaps.float().flatten(2).max(dim=-1)
    ys = torch.arange(h, device=heatmaps.device, dtype=logits.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=heatmaps.device, dtype=logits.dtype).view(1, 1, 1, w)
    if window is not None:
        px, py = (index % w)[..., None, None], torch.div(index, w, rounding_mode="floor")[..., None, None]
        near = ((xs - px).abs() <= window) & ((ys - py).abs() <= window)
        logits = logits.masked_fill(~near, float("-inf"))
    prob = torch.softmax(logits.reshape(n, k, -1), dim=-1).view(n, k, h, w)
    coords = torch.stack([(prob * xs).sum((2, 3)), (prob * ys).sum((2, 3))], dim=-1)
    return heatmap_to_pixels(coords, stride, encoding), scores


def flip_heatmaps(heatmaps: torch.Tensor, flip_index: torch.Tensor, shift: bool = False) -> torch.Tensor:
    """Heatmaps of a mirrored image back in the original frame: mirror, then renumber.
    `shift` is mmpose's shift_heatmap: move the result one cell right (column 0 keeps its
    value), the flip test's correction for the "msra" convention."""
    back = heatmaps.flip(-1)[:, flip_index]
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return back


def weighted_heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mmpose's JointsMSELoss with target weights: mean over (N, K, H, W) of (w * (pred - target))^2."""
    w = weight.to(pred.dtype)[..., None, None]
    return ((w * (pred.float() - target.float())) ** 2).mean()
