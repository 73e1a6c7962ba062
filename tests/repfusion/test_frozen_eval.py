"""Frozen-feature evaluation: the weighted k-NN against a hand-worked case, the linear probe
against scikit-learn's logistic regression on the same objective, and the command on a
random-init backbone and on a teacher at one t, reading only the drawn labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

from repfusion.frozen_eval import evaluate_features, fit_linear
from repfusion.knn import knn_classify
from repfusion.oracle import pooled_features, split_tensors
from repfusion.teacher import DiffusionTeacher
from tasks.data import DigitsDataModule
from tests.conftest import run_cli


def test_weighted_knn_lets_one_close_neighbour_outvote_two_far_ones():
    """k = 3: two class-0 images at cosine 0.2 from the query, one class-1 image at 0.98.
    A plain vote says 0; exp(sim / 0.07) weights say 1 (e^14 against 2 e^2.9)."""
    bank = torch.tensor([[0.2, 0.98], [0.2, -0.98], [0.98, 0.2]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_classify(bank, labels, query, k=3, temperature=0.07).tolist() == [1]
    assert knn_classify(bank, labels, query, k=3, temperature=1e6).tolist() == [0]  # equal weights: the majority
    assert knn_classify(bank, labels, query, k=1).tolist() == [1]


def test_linear_probe_is_scikit_learns_logistic_regression():
    """mean CE + wd |W|^2 / 2 is scikit-learn's objective with C = 1 / (wd N) (bias unpenalised):
    the same probabilities."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g, dtype=torch.float64), torch.arange(60) % 3
    x[:, :3] += torch.nn.functional.one_hot(y, 3) * 1.5
    layer = fit_linear(x, y, weight_decay=0.05, max_iter=500)
    reference = LogisticRegression(C=1 / (0.05 * 60), tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    ours = torch.softmax(layer(x), 1).detach().numpy()
    assert np.abs(ours - reference.predict_proba(x.numpy())).max() < 1e-5


def test_separable_features_score_one_and_shuffled_labels_do_not():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    train_y, test_y = torch.arange(40) % 4, torch.arange(200) % 4
    train_f = centres[train_y] + torch.randn(40, 16, generator=g)
    test_f = centres[test_y] + torch.randn(200, 16, generator=g)
    cfg = OmegaConf.create({"linear": {"weight_decay": 1e-3, "max_iter": 200}, "knn": {"k": 5, "temperature": 0.07}})
    assert evaluate_features(train_f, train_y, test_f, test_y, cfg) == {"test/linear_acc": 1.0, "test/knn_acc": 1.0}
    shuffled = evaluate_features(train_f, train_y[torch.randperm(40, generator=g)], test_f, test_y, cfg)
    assert max(shuffled.values()) < 0.6


def test_command_on_a_random_backbone_and_on_the_teacher_reads_only_the_drawn_labels(teacher_dir, tmp_path):
    common = ["data.labels_per_class=3", "seed=4", "backbone.name=test_resnet", "knn.k=5"]
    for name, extra in (("random", []), ("teacher", [f"teacher.source={teacher_dir}", "teacher_t=10"])):
        result = run_cli([*common, *extra, f"hydra.run.dir={tmp_path / name}"], module="repfusion.frozen_eval")
        assert result.returncode == 0, result.stderr[-3000:]
    random = json.loads((tmp_path / "random" / "summary.json").read_text())
    teacher = json.loads((tmp_path / "teacher" / "summary.json").read_text())
    assert random["labels_used"] == {"count": 30, "per_class": 3, "seed": 4, "pool": 1257, "unlabelled": "drop"}
    assert teacher["representation"] == "teacher" and teacher["t"] == 10
    # the teacher row recomputed here from the same 30 labelled digits and the test split
    data = DigitsDataModule(labels_per_class=3, label_seed=4, batch_augment=None)
    data.setup("fit")
    (train_x, train_y), (test_x, test_y) = split_tensors(data.train_set, None), split_tensors(data.test_set, None)
    model = DiffusionTeacher(str(teacher_dir))
    model.set_input_normalization(data)
    model.eval()
    train_f = pooled_features(model, data.normalize(train_x), 10, 256)
    test_f = pooled_features(model, data.normalize(test_x), 10, 256)
    cfg = OmegaConf.create({"linear": {"weight_decay": 1e-3, "max_iter": 500}, "knn": {"k": 5, "temperature": 0.07}})
    expected = evaluate_features(train_f, train_y, test_f, test_y, cfg)
    assert teacher["test"] == pytest.approx(expected, abs=1e-9)
