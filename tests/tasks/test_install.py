"""The framework as a user installs it. The wheel built from this checkout goes into a fresh
virtual environment that reuses the installed dependencies (a .pth to this environment's
site-packages: nothing is downloaded), and its commands run from a folder outside the
checkout: kt-train, the example project's kt-chain (its own config folder and module) at one
epoch, kt-eval on that chain's export. Nothing is written into site-packages. The editable
install (this environment) reads the same package: conf/ through tasks/conf, pkg://tasks.conf."""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_summary

# what the top of a checkout holds that is no input of the build (conf/data and tasks/data are)
NOT_BUILT = {".venv", ".git", "logs", "outputs", "multirun", "wandb", "data", "build", ".pytest_cache"}
ONE_EPOCH = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def dependency_dirs() -> list[str]:
    """This environment's site-packages folders (with those its .pth files add), for the new venv."""
    found = [
        *site.getsitepackages(),
        *[p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))],
    ]
    return list(dict.fromkeys(p for p in found if Path(p).is_dir()))


def build_wheel(tmp: Path) -> Path:
    """`pip wheel --no-deps --no-build-isolation` of a copy of the checkout (the build writes build/ there)."""
    src = tmp / "src"

    def skipped(folder: str, names: list[str]) -> set[str]:
        top = NOT_BUILT if Path(folder) == ROOT else set()
        return {n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")}

    shutil.copytree(ROOT, src, symlinks=True, ignore=skipped)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("kt_framework-*.whl")
    return wheel


def make_venv(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv whose own site-packages holds only the wheel; the dependencies come through a .pth."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "_kt_dependencies.pth").write_text("\n".join(dependency_dirs()) + "\n")
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return venv, Path(purelib)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def user_env(venv: Path) -> dict[str, str]:
    """A user's shell: the venv's bin first; no checkout on the path, no log or config folder set."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KT_LOG_DIR", "KT_CONFIG_DIR")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def command(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=user_env(venv), capture_output=True, text=True
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_install_runs_train_chain_and_eval_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    venv, site_packages = make_venv(tmp_path, wheel)
    shipped = sorted(
        str(p.relative_to(site_packages / "tasks" / "conf")) for p in site_packages.glob("tasks/conf/**/*.yaml")
    )
    ours = sorted(str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").glob("**/*.yaml"))
    assert shipped == [p for p in ours if not p.startswith("local/")] and "experiment/classify_digits.yaml" in shipped
    before = snapshot(site_packages)
    work = tmp_path / "work"
    work.mkdir()
    assert not work.is_relative_to(ROOT)
    where = command(venv, ["python", "-c", "import tasks, tasks.conf; print(tasks.conf.__file__)"], work).stdout
    assert Path(where.strip()).is_relative_to(site_packages), where  # the wheel's package, not the checkout's

    command(venv, ["kt-train", "experiment=classify_digits", "debug=fast"], work)
    (run,) = (work / "logs" / "classify_digits" / "runs").iterdir()  # ./logs of the folder it ran in
    assert read_summary(run)["experiment"] == "classify_digits"

    project = work / "my_project"
    shutil.copytree(ROOT / "examples" / "my_project", project, ignore=shutil.ignore_patterns("logs", "__pycache__"))
    chain = ["kt-chain", "my_chain.yaml", "--config-dir", "conf", "--seeds", "1", *ONE_EPOCH]
    command(venv, chain, project)
    (chain_dir,) = (project / "logs" / "chains" / "my_chain").iterdir()
    report = json.loads((chain_dir / "chain_summary.json").read_text())
    assert [row["label"] for row in report["rows"]] == ["cross-entropy", "confidence penalty"]
    penalty = chain_dir / "penalty" / "seed1"
    assert read_summary(penalty)["experiment"] == "digits_penalty"  # the project's own experiment
    saved = (penalty / ".hydra" / "config.yaml").read_text()
    assert "_target_: penalty.ConfidencePenaltyClassifier" in saved and "beta: 0.1" in saved
    (metrics,) = penalty.glob("**/metrics.csv")
    assert "train/entropy" in next(csv.reader(metrics.open()))  # logged by the project's own training_step

    command(venv, ["kt-eval", f"ckpt={penalty / 'export'}", "trainer.limit_test_batches=1", "logger=csv"], project)
    (evaluated,) = (project / "logs" / "eval" / "runs").iterdir()
    tested, own = read_summary(evaluated)["test"], read_summary(penalty)["test"]  # the same weights, the same batch
    assert tested["test/acc"] == own["test/acc"] and tested["test/loss"] == pytest.approx(own["test/loss"], abs=1e-5)
    assert snapshot(site_packages) == before  # nothing written into site-packages
    assert sorted(p.name for p in work.iterdir()) == ["logs", "my_project"]


def test_editable_install_reads_conf_through_the_package(tmp_path):
    """This checkout's conf/ is the package tasks.conf (tasks/conf links to it), which Hydra's
    pkg://tasks.conf source reads; from another folder, the editable install finds the same
    package and the KT_CONFIG_DIR plugin."""
    from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource

    from tasks.config.location import CONF_DIR, CONFIG_SOURCE

    assert (ROOT / "tasks" / "conf").resolve() == (ROOT / "conf").resolve() == CONF_DIR
    source = ImportlibResourcesConfigSource("main", CONFIG_SOURCE)
    assert source.available() and source.is_config("train") and source.is_group("experiment")
    assert "classify_digits" in source.list("experiment", results_filter=None)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import tasks.conf, hydra_plugins.kt_config_dirs as p; print(tasks.conf.__file__); print(p.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    if "No module named 'tasks'" in found.stderr:
        pytest.skip("the project is not installed in this environment (make install: pip install -e .)")
    conf, plugin = found.stdout.split()
    assert Path(conf) == ROOT / "tasks" / "conf" / "__init__.py"
    assert Path(plugin) == ROOT / "hydra_plugins" / "kt_config_dirs" / "__init__.py"
