import pytest

from prerank_jax.train.programs import apply_overrides, parse_programs, program_label
from tests.conftest import load_config


def test_parse_is_a_product_of_literal_values():
  programs = parse_programs("student.loss.kd=hinton_listwise|logit_mse; "
                            "student.model.hidden=(32,)|(64, 32)")
  assert len(programs) == 4
  assert programs[1] == {"student.loss.kd": "hinton_listwise", "student.model.hidden": (64, 32)}
  assert parse_programs("") == [{}]
  assert program_label(programs[2]) == "kd=logit_mse hidden=(32,)"


@pytest.mark.parametrize("spec, match", [
    ("student.loss.kd", "expected 'path=v1"),
    ("teacher.num_epochs=1|2", "cannot be a program axis"),
    ("student.loss.kd=a; student.loss.kd=b", "appears twice"),
])
def test_bad_specs_are_named(spec, match):
  with pytest.raises(ValueError, match=match):
    parse_programs(spec)


def test_overrides_copy_and_never_mutate():
  config = load_config()
  derived = apply_overrides(config, {"student.model.hidden": [8], "student.loss.kd": "logit_mse"})
  assert derived.student.model.hidden == (8,) and derived.student.loss.kd == "logit_mse"
  assert config.student.model.hidden == (64, 32) and config.student.loss.kd == "hinton_listwise"
  with pytest.raises(ValueError, match="unknown config field 'student.model.width'"):
    apply_overrides(config, {"student.model.width": 3})
