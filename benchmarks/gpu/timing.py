"""The throughput phase of the GPU route: every entry's representative run timed on the idle
GPU, in rounds, so that a spent budget leaves the most useful numbers measured for every
entry: (1) the recipe's batch, (2) with channels_last, (3) the largest batch that fits,
(4) it with channels_last, (5) with channels_last + torch.compile. A measurement starts only
while its rough cost is left before the deadline; the rest are listed as skipped."""

from __future__ import annotations

import time

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from benchmarks.gpu import throughput
from tasks.errors import UserError

ROUNDS = [
    ("recipe", False, False, 10),
    ("recipe", True, False, 10),
    ("max", False, False, 15),
    ("max", True, False, 15),
    ("max", True, True, 90),
]  # batch, channels_last, compile, rough cost (s)
SEARCH_COST_S = 40
MAX_BATCH = 16384


def representative(entry: dict):
    stage = entry["spec"].get("throughput_stage")
    return next((j for j in entry["jobs"] if stage is None or j.key.split("/")[1] == stage), None)


def time_entries(
    entries: dict[str, dict],
    extra: list[str],
    smoke: bool,
    deadline: float,
    compile_option: bool,
    on_change=lambda results: None,
) -> dict[str, list[dict]]:
    timed = {name: e for name, e in entries.items() if e["spec"].get("throughput") or e["spec"].get("throughput_stage")}
    results: dict[str, list[dict]] = {name: [] for name in timed}
    recipes, biggest, flops = {}, {}, {}
    for name, entry in timed.items():
        job = representative(entry)
        if job is None or job.state != "done":
            results[name].append({"error": f"representative run {job.key if job else '?'} did not finish"})
            continue
        try:
            recipes[name] = throughput.Recipe(job.run_dir, extra)
        except (HydraException, OmegaConfBaseException, OSError, UserError) as err:  # reported; the others are timed
            results[name].append({"error": f"{type(err).__name__}: {str(err)[:160]}"})
    rounds = ROUNDS[:2] if smoke else [r for r in ROUNDS if compile_option or not r[2]]
    for which, channels_last, compiled, cost_s in rounds:
        for name, recipe in recipes.items():
            if which == "max" and name not in biggest:
                biggest[name] = (
                    throughput.largest_batch(recipe, recipe.batch_size, MAX_BATCH)
                    if time.monotonic() + SEARCH_COST_S < deadline
                    else None
                )
            batch = recipe.batch_size if which == "recipe" else biggest[name]
            if batch is None or (which == "max" and batch == recipe.batch_size):
                continue  # no search in the time left, or the recipe's batch is already the largest
            results[name].append(attempt(recipe, batch, channels_last, compiled, cost_s, deadline, smoke, flops))
            on_change(results)
    for recipe in recipes.values():
        del recipe
    throughput.free_memory()
    return results


def attempt(
    recipe, batch: int, channels_last: bool, compiled: bool, cost_s: float, deadline: float, smoke: bool, flops: dict
) -> dict:
    if time.monotonic() + cost_s > deadline:
        return {
            "batch_size": batch,
            "channels_last": channels_last,
            "compile": compiled,
            "error": "skipped: the time budget is spent",
        }
    try:
        record = throughput.measure(
            recipe,
            batch,
            steps=2 if smoke else 20,
            warmup=1 if smoke else 5,
            channels_last=channels_last,
            compile_model=compiled,
            flops=flops.get((id(recipe), batch)),
        )
    except (RuntimeError, ValueError, TypeError) as err:  # (CUDA, compile) a failing option is reported, the others run
        text = str(err).splitlines()[0][:160] if str(err) else ""
        throughput.free_memory()
        return {
            "batch_size": batch,
            "channels_last": channels_last,
            "compile": compiled,
            "error": f"{type(err).__name__}: {text}",
        }
    flops.setdefault((id(recipe), batch), record["flops_per_step"])
    return record
