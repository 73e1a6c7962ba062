"""How a command's Hydra app is launched: the job name (which names the run's job log) is the one
`@hydra.main` gives, computed without Hydra's internals; Hydra's own function is the reference."""

from __future__ import annotations

import pytest
from hydra._internal.utils import detect_calling_file_or_module_from_task_function, detect_task_name

from tasks.run.launch import job_name


def _script_task(cfg):
    """A task defined in a file run as a script (its module is __main__)."""


_script_task.__module__ = "__main__"


def _hydra_name(task) -> str:
    return detect_task_name(*detect_calling_file_or_module_from_task_function(task))


@pytest.mark.parametrize("module,name", [("train", "main"), ("dery.similarity", "main"), ("repfusion.oracle", "main")])
def test_the_job_name_is_hydras_for_a_module(module, name):
    task = getattr(__import__(module, fromlist=[name]), name)
    assert job_name(task) == _hydra_name(task) == module.rpartition(".")[2]


def test_the_job_name_is_hydras_for_a_script_and_under_hydra_main_module(monkeypatch):
    assert job_name(_script_task) == _hydra_name(_script_task) == "test_launch"
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "pkg.stage_app")
    assert job_name(_script_task) == _hydra_name(_script_task) == "stage_app"
