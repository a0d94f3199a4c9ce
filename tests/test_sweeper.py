"""hydra/sweeper=harness: Hydra's basic sweeper without its up-front re-composition of every job."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from harness.config import register_configs
from hydra_plugins.harness_sweeper.harness_sweeper import HarnessSweeper


class CountingLoader:
    """A config loader that counts compositions (what BasicSweeper's batch check does per job)."""

    def __init__(self) -> None:
        self.calls = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.calls += 1
        return master_config


def test_the_harness_sweeper_is_the_default_and_basic_is_one_override_away():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose(config_name="config", return_hydra_config=True)
        basic = compose(config_name="config", overrides=["hydra/sweeper=basic"], return_hydra_config=True)
    assert default.hydra.sweeper._target_ == "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    assert basic.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    # basic's options (params, max_batch_size), folding (tests/test_fold.py), two stages (tests/test_two_stage.py)
    extra = {"fold", "max_replicas", "evaluation_seeds", "only"}
    assert set(default.hydra.sweeper.keys()) == set(basic.hydra.sweeper.keys()) | extra
    assert default.hydra.sweeper.evaluation_seeds == 0 and list(default.hydra.sweeper.only) == []  # one stage, all
    assert list(default.hydra.sweeper.fold) == ["seed", "train.lr"] and default.hydra.sweeper.max_replicas == 30


@pytest.mark.parametrize("cls,compositions", [(BasicSweeper, 3), (HarnessSweeper, 0)])
def test_batch_check_composes_nothing_in_the_harness_sweeper(cls, compositions):
    # __new__: Hydra's plugin scan (run by the compose above) may re-import basic_sweeper, and then
    # BasicSweeper.__init__'s super() no longer matches the class imported here.
    sweeper = cls.__new__(cls)
    loader = CountingLoader()
    sweeper.hydra_context = SimpleNamespace(config_loader=loader)
    sweeper.config = object()
    sweeper.validate_batch_is_legal([["seed=0"], ["seed=1"], ["seed=2"]])
    assert loader.calls == compositions
