"""Methods register themselves: the shared layer (tasks/) imports and names no method package,
in code or in strings; DeRy's stage schemas and the stage apps of every method come from the
entry points of pyproject.toml (kt.schemas, kt.apps), read by tasks.config.registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.config.check import check_command
from tasks.config.command_schemas import command_schema, command_sections
from tasks.config.registry import entry_points, stage_apps
from tests.conftest import CONF, ROOT, compose_config

METHODS = ("repfusion", "dery", "kf")
NAMED = re.compile(rf"^({'|'.join(METHODS)})([.:/]|$)")  # a module, a dotted target, a config of a method


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)}


def method_names_in(path: Path) -> list[str]:
    """Imports of a method package and strings (but docstrings) that name one, with their lines."""
    tree = ast.parse(path.read_text())
    docs, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if NAMED.match(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and NAMED.match(node.module):
            found.append(f"{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if NAMED.match(node.value):
                found.append(f"{node.lineno}: {node.value!r}")
    return found


def test_the_scan_finds_what_the_shared_layer_must_not_hold(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        '"""Docstrings may say repfusion.module."""\nimport kf.losses\nfrom dery import zoo\n'
        'X = {("repfusion.policy.TimestepPolicy", "mode"): 1, "dery/search": 2}\nY = "kfold"\n'
    )
    assert sorted(method_names_in(source)) == [
        "2: import kf.losses",
        "3: from dery",
        "4: 'dery/search'",
        "4: 'repfusion.policy.TimestepPolicy'",
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_shared_layer_names_no_method(path):
    assert method_names_in(path) == []


def test_stage_apps_and_their_schemas_are_registered_by_their_packages():
    assert stage_apps() == {
        "dery.similarity": "dery/similarity",
        "dery.partition": "dery/partition",
        "dery.search": "dery/search",
        "dery.proxy_study": "dery/proxy_study",
        "repfusion.oracle": "repfusion/oracle",
    }
    from dery.schemas import PartitionStage, SearchStage, SimilarityStage

    assert [command_schema(f"dery/{s}") for s in ("similarity", "partition", "search")] == [
        SimilarityStage,
        PartitionStage,
        SearchStage,
    ]
    assert command_sections("dery/partition") == () and command_sections("dery/search") == ("data",)
    assert command_schema("repfusion/oracle") is None  # an app without a schema: all sections checked
    assert command_sections("repfusion/oracle") == ("data", "model", "trainer", "callbacks", "logger")
    for module, config in stage_apps().items():  # each app's module and config exist
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").is_file() and (CONF / f"{config}.yaml").is_file()


def test_a_registered_schema_checks_its_command(tmp_path, monkeypatch):
    """Without the entry point a stage's plain keys go unchecked; with it, they are checked."""
    from tasks.config import registry

    cfg = compose_config(["similarity=/x", "K=0"], tmp_path / "run", "dery/partition")
    with pytest.raises(Exception, match=r"K=0 is out of range: PartitionStage\(K\)"):
        check_command(cfg, "dery/partition")
    monkeypatch.setattr(registry, "_groups", lambda: {})
    check_command(cfg, "dery/partition")
    assert entry_points("kt.schemas") == {}
