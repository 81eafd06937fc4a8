"""Config validation: every bad value names its field and range before any work starts."""

import pytest

from prerank_jax.config import ConfigError, check_against_data, validate_config
from tests.conftest import load_config


def test_shipped_configs_validate():
  validate_config(load_config(arg=None))
  validate_config(load_config(arg="smoke"))


@pytest.mark.parametrize("name", ["quickstart", "letor", "movielens", "tabular",
                                  "large_lists"])
def test_every_config_file_documents_its_launch_and_has_a_smoke_form(name):
  from pathlib import Path

  from prerank_jax.config_files import repo_config

  path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
  doc = path.read_text().split('"""')[1]
  assert "prerank-jax" in doc and "Expected runtime" in doc, name
  full, smoke = repo_config(name), repo_config(name, "smoke")
  for config in (full, smoke):
    validate_config(config)
  assert smoke.student.num_epochs < full.student.num_epochs
  assert smoke.dataset == full.dataset
  with pytest.raises(ValueError, match=f"configs/{name}.py: unknown argument"):
    repo_config(name, "nope")


@pytest.mark.parametrize("path, value, match", [
    ("sweep.temperature", (1.0, 0.0), r"sweep.temperature: must be in \(0, inf\)"),
    ("sweep.temperature", (-2.0,), r"sweep.temperature: must be in \(0, inf\)"),
    ("sweep.alpha", (0.5, 1.5), r"sweep.alpha: must be in \[0, 1\]"),
    ("sweep.alpha", (-0.1,), r"sweep.alpha: must be in \[0, 1\]"),
    ("sweep.learning_rate", (0.0,), r"sweep.learning_rate: must be in \(0, inf\)"),
    ("eval.keep_ratios", (0.5, 1.2), r"eval.keep_ratios\[1\]: must be a keep ratio in \(0, 1\]"),
    ("eval.keep_ratios", (0.0,), r"eval.keep_ratios\[0\]: must be a keep ratio in \(0, 1\]"),
    ("eval.k", 0, r"eval.k: must be an int in \[1,"),
    ("student.loss.kd", "hinton", r"student.loss.kd: unknown name 'hinton'; valid names are \["),
    ("student.loss.kd", "none", r"student.loss.kd: a student needs a distillation loss"),
    ("teacher.loss.gt", "mse", r"teacher.loss.gt: unknown name 'mse'; valid names are \[.*'bce'"),
    ("student.model.name", "resnet", r"student.model.name: unknown name 'resnet'.*mlp_student"),
    ("student.model.hidden", (64, 0), r"student.model.hidden: must be a non-empty tuple"),
    ("student.epochs_per_chunk", 3, r"student.epochs_per_chunk: must divide"),
    ("data.num_exposed", 50, r"data.num_exposed"),
    ("name", "../escape", r"name: must be a non-empty run name"),
    ("sweep.group_size", -2, r"sweep.group_size: must be an int in \[-1, 4096\]"),
    ("sweep.group_size", True, r"sweep.group_size: must be an int"),
])
def test_bad_values_name_the_field(path, value, match):
  config = load_config()
  node = config
  *parents, leaf = path.split(".")
  for p in parents:
    node = node[p]
  with config.ignore_type():
    node[leaf] = value
  with pytest.raises(ConfigError, match=match):
    validate_config(config)


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_renamed_ipw_clip_is_refused_naming_propensity_floor(role):
  # A config file (or an old run dir's config.json) that still sets loss.ipw_clip.
  config = load_config()
  with config.unlocked():
    config[role].loss.ipw_clip = 0.05
  with pytest.raises(ConfigError, match=rf"{role}\.loss\.ipw_clip: renamed to "
                                        rf"{role}\.loss\.propensity_floor"):
    validate_config(config)


def test_k_larger_than_the_shortest_list_is_accepted():
  # Issue 10: lists shorter than k are evaluated over their length, not refused.
  config = load_config()
  config.eval.k = 13
  check_against_data(config, shortest_list=12, num_train_requests=64)
  assert config.eval.k == 13


def test_batch_larger_than_train_split_is_refused():
  config = load_config()
  config.student.batch_size = 65
  with pytest.raises(ConfigError, match=r"student.batch_size: must be in \[1, 64\]"):
    check_against_data(config, shortest_list=12, num_train_requests=64)


def test_locked_config_rejects_unknown_fields():
  config = load_config()
  with pytest.raises(AttributeError):
    config.sweep.temprature = (1.0,)


def test_groups_of_points_need_the_device_pipeline():
  config = load_config()
  with config.ignore_type():
    config.sweep.group_size = 4
    config.input_pipeline = "grain"
  with pytest.raises(ConfigError, match="sweep.group_size: groups of points run with the "
                     "device-resident pipeline only"):
    validate_config(config)
