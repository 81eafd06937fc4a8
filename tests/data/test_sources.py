"""The config.source values the data floor knows (prerank_jax/data/sources.py) are the
config files' values, so a prepare command lists exactly the fields a user changed."""

import shlex

import pytest

from prerank_jax.config_files import repo_config
from prerank_jax.data.messages import prepare_command
from prerank_jax.data.registry import DATASETS


@pytest.mark.parametrize("name", ["quickstart", "letor", "movielens", "tabular"])
def test_each_config_file_source_is_its_dataset_spec_source(name):
  config = repo_config(name)
  assert config.source.to_dict() == dict(DATASETS[config.dataset].source)


def test_prepare_command_lists_only_the_changed_source_fields():
  config = repo_config("letor")
  assert prepare_command(config, kind="letor") == ("python -m prerank_jax.data --config=configs/letor.py "
                                     "--config.dataset=mslr_web/10k_fold1")
  config.source.manual_dir = "/data/my mslr"
  config.source.list_size = 50
  config.seed = 3
  args = shlex.split(prepare_command(config, kind="letor"))
  assert args[4:6] == ["--config.dataset=mslr_web/10k_fold1", "--config.seed=3"]
  assert sorted(args[6:]) == ["--config.source.list_size=50",
                              "--config.source.manual_dir=/data/my mslr"]
