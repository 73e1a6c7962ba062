"""Task declarations: generators, validation errors with their fixes, targets, decoding."""

from __future__ import annotations

import pytest
import torch

from kf.task_spec import TaskSpec, build_tasks, decode_factor, task_targets
from tasks.errors import UserError

DIGITS = {"label": 10}


def test_one_vs_rest_default():
    specs = build_tasks("one_vs_rest", DIGITS)
    assert [s.name for s in specs] == [f"class{v}" for v in range(10)]
    assert specs[3].groups == ((0, 1, 2, 4, 5, 6, 7, 8, 9), (3,))
    y = torch.tensor([3, 4])
    assert task_targets(specs, ["label"], y)[:, 3].tolist() == [1, 0]
    assert task_targets(specs, ["label"], y)[:, 4].tolist() == [0, 1]


def test_grouped_and_binned_tasks():
    specs = build_tasks(
        [{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}, {"name": "thirds", "bins": 3}], DIGITS
    )
    assert specs[0].value_to_class().tolist() == [0] * 5 + [1] * 5
    assert specs[1].groups == ((0, 1, 2), (3, 4, 5, 6), (7, 8, 9))


def test_per_factor_and_multi_factor_targets():
    sizes = {"shape": 3, "x": 4}
    specs = build_tasks("per_factor", sizes)
    y = torch.tensor([[2, 0], [1, 3]])
    assert task_targets(specs, list(sizes), y).tolist() == [[2, 0], [1, 3]]
    x_half = build_tasks([{"name": "left", "factor": "x", "groups": [[0, 1], [2, 3]]}], sizes)
    assert task_targets(x_half, list(sizes), y).tolist() == [[0], [1]]


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"groups": [[0, 1, 2], [3, 4]]}, r"leaves values \[5, 6, 7, 8, 9\].*add them to a group"),
        ({"groups": [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9]]}, r"values \[5\] in more than one group"),
        ({"groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 12]], "name": "t"}, r"values \[12\] outside 0..9"),
        ({"groups": [list(range(10))]}, "at least two non-empty groups"),
        ({"factor": "colour"}, r"factor='colour' is not a factor of the data.*\['label'\]"),
        ({"grups": [[0], [1]]}, r"unknown keys \['grups'\]"),
        ({"bins": 11}, "bins=11 must be between 2"),
    ],
)
def test_bad_declarations_name_the_fix(entry, message):
    with pytest.raises(UserError, match=message):
        build_tasks([entry], DIGITS)


def test_bad_generators_and_duplicates():
    with pytest.raises(UserError, match="not a generator"):
        build_tasks("one_vs_all", DIGITS)
    with pytest.raises(UserError, match="single-factor"):
        build_tasks("one_vs_rest", {"shape": 3, "x": 4})
    with pytest.raises(UserError, match="used more than once"):
        build_tasks([{"name": "a", "bins": 2}, {"name": "a", "bins": 5}], DIGITS)


def test_coarsening_sums_teacher_classes_into_task_classes():
    teacher = TaskSpec("label", "label", tuple((v,) for v in range(10)))
    task = build_tasks([{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}], DIGITS)[0]
    matrix = teacher.coarsening(task)
    probs = torch.full((1, 10), 0.1)
    probs[0, 7] += 0.05
    probs[0, 0] -= 0.05
    assert torch.allclose(probs @ matrix, torch.tensor([[0.45, 0.55]]))
    assert task.coarsening(teacher) is None  # two task classes cannot be split into ten


def test_decoding_one_vs_rest_is_argmax_of_margins():
    specs = build_tasks("one_vs_rest", {"label": 3})
    logits = [
        torch.tensor([[0.0, 2.0], [0.0, -1.0]]),
        torch.tensor([[0.0, 1.0], [0.0, 3.0]]),
        torch.tensor([[0.0, -5.0], [0.0, 0.0]]),
    ]
    pred = decode_factor([lg.log_softmax(1) for lg in logits], specs, "label")
    assert pred.tolist() == [0, 1]
    assert (
        decode_factor([logits[0].log_softmax(1)], specs[:1], "label") is None
    )  # one binary task cannot tell 3 values apart
