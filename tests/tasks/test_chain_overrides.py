"""Chain-wide overrides reach the stages that take them (tasks.studies.overrides): with
`trainer.max_epochs=1`, the cheapest smoke of every chain in conf/chain/, each stage with a
trainer gets it and passes the chain's preflight, the stage apps without one run without it,
and an override no stage takes is one error naming the stages and their apps."""

from __future__ import annotations

import pytest

from tasks.config.registry import stage_apps
from tasks.errors import UserError
from tasks.run.preflight import SHARED_APPS, check_stage_commands
from tasks.studies.chain import load_chain, plan, routed_overrides
from tasks.studies.overrides import app_of
from tests.conftest import CONF

QUICK = "trainer.max_epochs=1"


@pytest.mark.parametrize("chain_name", sorted(p.stem for p in (CONF / "chain").glob("*.yaml")))
def test_a_chain_wide_trainer_override_goes_to_every_stage_with_a_trainer(chain_name, tmp_path):
    chain = load_chain(chain_name)
    runs = plan(chain, tmp_path, [], routed_overrides(chain, tmp_path, [QUICK], {}, None), None)
    apps = {**SHARED_APPS, **stage_apps()}
    for run in runs:
        config_name, _ = app_of(run.command, apps)
        has_trainer = config_name in ("train", "eval")
        assert (QUICK in run.command) == has_trainer, (run.stage, config_name)
        if has_trainer:  # after the stage's own overrides: the chain-wide one wins
            last = max(i for i, a in enumerate(run.command) if a.startswith("trainer.max_epochs="))
            assert run.command[last] == QUICK
    check_stage_commands([r.command for r in runs])


def test_an_override_no_stage_takes_names_the_stages_and_their_apps(tmp_path):
    chain = load_chain("repfusion_digits")
    with pytest.raises(UserError) as caught:
        routed_overrides(chain, tmp_path, ["trainer.max_epoch=1", QUICK], {}, None)
    text = str(caught.value)
    assert text.startswith("No stage of this chain takes ['trainer.max_epoch=1']: Unknown config key ")
    assert "'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?" in text
    assert "teacher (train), oracle (repfusion/oracle), distil (train)" in text and "picture (repfusion/oracle)" in text
    routed = routed_overrides(chain, tmp_path, ["trainer=cpu", "hydra.job.chdir=false"], {"oracle": ["grid=[]"]}, None)
    assert routed["oracle"] == ["hydra.job.chdir=false", "grid=[]"] and routed["teacher"] == [
        "trainer=cpu",
        "hydra.job.chdir=false",
    ]
