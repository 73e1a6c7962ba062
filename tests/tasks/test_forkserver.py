"""Stage runs forked from a parent that imported the libraries once (tasks.studies.forkserver):
each child is its own process with its own log and exit code, a crash or a kill takes only that
child down (and what waits on it), and a child sees the working folder, the environment and the
thread count it was given."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

MODULES = {
    "ok_stage": "import os, sys, torch\nprint('ran', os.environ['MARK'], torch.get_num_threads(), sys.argv[1:])\n",
    "exit_stage": "import sys\nprint('exiting')\nsys.exit(3)\n",
    "crash_stage": "raise RuntimeError('boom in the stage')\n",
    "killed_stage": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
}
# Runs in a fresh interpreter: the scheduler with the fork launcher, as a chain runs its stages.
PARENT = """
import json, sys, threading
from pathlib import Path
from tasks.studies import forkserver
from tasks.studies.scheduler import Job, run_jobs

here = Path(sys.argv[1])
forkserver.preload(["torch"])
jobs = [
    Job(k, "t", [sys.executable, "-m", k, "a=1"], here / "runs" / k, deps=["killed_stage"] if k == "after" else [])
    for k in ["ok_stage", "exit_stage", "crash_stage", "killed_stage", "after"]
]
handles = []
def launch(*args):
    handles.append(forkserver.launch(*args))
    return handles[-1]
run_jobs(jobs, 2, here / "logs", {"MARK": "m1", "OMP_NUM_THREADS": "1"}, cwd=here, launch=launch)
print(json.dumps({
    "states": {j.key: [j.state, j.exit_code] for j in jobs},
    "forked": [type(h).__name__ for h in handles],
    "threads": threading.active_count(),
}))
"""


def test_forked_children_keep_their_own_logs_exit_codes_and_crashes(tmp_path):
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    result = subprocess.run(
        [sys.executable, "-c", PARENT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["forked"] == ["Forked"] * 4 and out["threads"] == 1
    # no summary.json: a run that exits 0 without one is "failed" for the scheduler too
    assert out["states"] == {
        "ok_stage": ["failed", 0],
        "exit_stage": ["failed", 3],
        "crash_stage": ["failed", 1],
        "killed_stage": ["failed", -9],
        "after": ["skipped", None],
    }
    logs = tmp_path / "logs"
    assert (logs / "ok_stage.log").read_text().splitlines()[-1] == "ran m1 1 ['a=1']"
    assert (logs / "exit_stage.log").read_text().splitlines()[-1] == "exiting"
    crash = (logs / "crash_stage.log").read_text()
    assert "Traceback" in crash and crash.rstrip().endswith("RuntimeError: boom in the stage")
