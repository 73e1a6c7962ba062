"""shapes_landmarks: procedurally generated landmark images (no download). Every image holds
one face-like arrangement of polygons on a cluttered background (random polygons and
noise), drawn with a random position, size, aspect, in-plane rotation and colours, and its
15 keypoints are known exactly:

  0-7   face contour: polygon vertices at 22.5 + 45k degrees (k = 0..7; y points down)
  8, 9  left eye (image left): outer corner, inner corner
  10,11 right eye: inner corner, outer corner
  12    nose tip
  13,14 mouth: left corner, right corner

A horizontal flip exchanges 0<->3, 1<->2, 4<->7, 5<->6, 8<->11, 9<->10, 13<->14 (FLIP_INDEX).
The NME normaliser is the outer-eye-corner distance (points 8 and 11), as for WFLW."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import TensorDataset

from tasks.config.types import AtLeastOne, Count, Seed
from tasks.dense.data.base import KeypointDataModule

KEYPOINT_NAMES = (
    *(f"contour{k}" for k in range(8)),
    "left_eye_outer",
    "left_eye_inner",
    "right_eye_inner",
    "right_eye_outer",
    "nose_tip",
    "mouth_left",
    "mouth_right",
)
FLIP_INDEX = (3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 12, 14, 13)
SUPERSAMPLE = 4


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, ...]:
    return tuple(rng.integers(lo, hi, 3).tolist())


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def render_face(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image and its (15, 2) keypoints (pixel centres at integers)."""
    # Canonical face in a unit frame (x right, y down); shapes are polygons in that frame.
    angles = np.deg2rad(22.5 + 45 * np.arange(8))
    contour = np.stack([np.cos(angles), np.sin(angles) * 1.15], 1) * rng.uniform(0.88, 1.08, (8, 1))
    eye_y, eye_x = rng.uniform(-0.35, -0.15), rng.uniform(0.30, 0.45)
    eye_w, eye_h = rng.uniform(0.13, 0.2), rng.uniform(0.06, 0.1)
    eyes = [
        _ellipse(side * eye_x + rng.uniform(-0.03, 0.03), eye_y + rng.uniform(-0.03, 0.03), eye_w, eye_h)
        for side in (-1, 1)
    ]
    nose_tip = np.array([rng.uniform(-0.05, 0.05), rng.uniform(0.12, 0.25)])
    nose = np.array(
        [[-0.07, eye_y + 0.1], [0.07, eye_y + 0.1], nose_tip + [0.08, 0.0], nose_tip, nose_tip - [0.08, 0.0]]
    )
    mouth_y, mouth_w = rng.uniform(0.45, 0.6), rng.uniform(0.2, 0.33)
    mouth = _ellipse(rng.uniform(-0.04, 0.04), mouth_y, mouth_w, rng.uniform(0.04, 0.09))
    points = np.concatenate([contour, eyes[0][[12, 0]], eyes[1][[12, 0]], nose_tip[None], mouth[[12, 0]]])

    # Similarity (+ aspect) into the image: random size, rotation, position.
    radius = size * rng.uniform(0.22, 0.3)
    aspect = rng.uniform(0.85, 1.15)
    angle = math.radians(rng.uniform(-25, 25))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scale = np.diag([radius * aspect, radius])
    centre = rng.uniform(size * 0.38, size * 0.62, 2)

    def place(p: np.ndarray) -> np.ndarray:
        return p @ scale.T @ rot.T + centre

    def draw_coords(p: np.ndarray) -> list[float]:
        return ((place(p) + 0.5) * SUPERSAMPLE - 0.5).ravel().tolist()  # pixel centres of the supersampled canvas

    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), _colour(rng))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 6)):  # clutter: random polygons
        c, r, k = rng.uniform(0, big, 2), rng.uniform(big * 0.05, big * 0.25), rng.integers(3, 7)
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        draw.polygon((c + r * np.stack([np.cos(t), np.sin(t)], 1)).ravel().tolist(), fill=_colour(rng))
    draw.polygon(draw_coords(contour), fill=_colour(rng, 60, 256))
    for eye in eyes:
        draw.polygon(draw_coords(eye), fill=_colour(rng, 180, 256))
        pupil = _ellipse(eye[:, 0].mean() + rng.uniform(-0.5, 0.5) * eye_w, eye_y, eye_h * 0.9, eye_h * 0.9, 12)
        draw.polygon(draw_coords(pupil), fill=_colour(rng, 0, 90))
    draw.polygon(draw_coords(nose), fill=_colour(rng, 30, 200))
    draw.polygon(draw_coords(mouth), fill=_colour(rng, 100, 256))
    image = np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32)
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), place(points)


def generate(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images as (n, 3, size, size) floats in [0, 1] and (n, 15, 2) keypoints."""
    rng = np.random.default_rng(seed)
    images, points = zip(*(render_face(size, rng) for _ in range(n)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(points)).float()


class ShapesLandmarksDataModule(KeypointDataModule):
    keypoint_names = KEYPOINT_NAMES
    flip_index = FLIP_INDEX
    interocular = (8, 11)
    mean = (0.53, 0.53, 0.53)  # measured on generated images
    std = (0.28, 0.28, 0.28)

    def __init__(
        self,
        image_size: AtLeastOne = 64,
        train_size: Count = 2000,
        val_size: Count = 300,
        test_size: Count = 300,
        data_seed: Seed = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size, self.sizes, self.data_seed = image_size, (train_size, val_size, test_size), data_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        made = []
        for offset, n in enumerate(self.sizes):
            x, points = generate(n, self.image_size, self.data_seed * 3 + offset)
            made.append(TensorDataset(x, points, torch.ones(points.shape[:2])))
        self.train_set, self.val_set, self.test_set = made
