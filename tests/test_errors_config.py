"""Catalogue, config values: a value that would make the run meaningless stops it at the start with
one line naming the key and what it accepts (exit 2), whichever way it was given."""
from __future__ import annotations

import pytest

from .conftest import assert_user_error

RUN = ("run", "--model", "tiny-fcos", "--task", "train")


@pytest.mark.parametrize("item, message", [
    ("data.batch_size=0", "config key data.batch_size=0: expected an integer >= 1"),
    ("optimizer.lr=-1", "config key optimizer.lr=-1: expected a number > 0"),
    ("scheduler.milestones=[0.9,0.5]",
     "config key scheduler.milestones=[0.9, 0.5]: expected a list of increasing numbers, "
     "each in (0, 1)"),
])
def test_config_value_out_of_range(run_cli, tmp_path, item, message):
    assert_user_error(run_cli(*RUN, "--work-dir", tmp_path / "w", "--set", item), 2, message)
    assert not (tmp_path / "w" / "result.json").exists()


def test_config_value_not_one_of_the_choices(run_cli):
    assert_user_error(run_cli(*RUN, "--set", "scheduler.name=linear"), 2,
                      'config key scheduler.name="linear": expected one of cosine, step, constant')


def test_config_file_value_of_wrong_type(run_cli, tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("base: smoke\ntrain:\n  epochs: twelve\n")
    assert_user_error(run_cli(*RUN, "--config", path), 2,
                      'config key train.epochs="twelve": expected an integer >= 1')


def test_loss_scale_option_not_a_number(run_cli):
    assert_user_error(run_cli(*RUN, "--amp", "fp16", "--loss-scale", "big"), 2,
                      "--loss-scale=\"big\": expected 'dynamic' or a number > 0")


def test_model_key_out_of_its_declared_range(run_cli):
    assert_user_error(run_cli(*RUN, "--set", "model.width=0"), 2,
                      "config key model.width=0: expected an integer >= 1")
