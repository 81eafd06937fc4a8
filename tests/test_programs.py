"""The store of traced programs (prerank_jax/programs.py, prerank_jax/host/compile_cache.py):
a stored program computes what ``jax.jit`` computes, a later "process" (a new StoredJit of
the same name) reuses it without tracing, and every part of the key separates programs."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax import programs
from prerank_jax.host import compile_cache


class State(NamedTuple):
  w: jax.Array
  key: jax.Array


@pytest.fixture
def store(tmp_path):
  store = compile_cache.ProgramStore(tmp_path / "programs")
  store.context = "test-context"
  previous = programs.install(store)
  yield store
  programs.install(previous)


def _counting(traces: list):
  def step(state: State, x, *, scale: int):
    traces.append(1)  # runs only while tracing
    noise = jax.random.normal(state.key, x.shape)
    return State(state.w * scale + x.sum(), jax.random.split(state.key)[0]), x * 2 + noise
  return step


def _state():
  return State(jnp.arange(3.0), jax.random.key(0))


def test_a_stored_program_computes_what_jit_computes_and_is_not_traced_again(store):
  traces = []
  x = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
  want = jax.jit(_counting([]), static_argnames="scale")(_state(), x, scale=3)
  first = programs.jit(_counting(traces), name="step", static_argnames=("scale",))
  got = first(_state(), x, scale=3)
  assert len(traces) == 1 and len(list(store.folder.iterdir())) == 1
  # A new function object of the same name, as in a later process: loaded, not traced.
  again = programs.jit(_counting(traces), name="step", static_argnames=("scale",))
  got_again = again(_state(), x, scale=3)
  assert len(traces) == 1
  for result in (got, got_again):
    np.testing.assert_array_equal(result[0].w, want[0].w)
    np.testing.assert_array_equal(jax.random.key_data(result[0].key),
                                  jax.random.key_data(want[0].key))
    np.testing.assert_array_equal(result[1], want[1])
    assert isinstance(result[0], State)


@pytest.mark.parametrize("change", ["shape", "dtype", "static", "name", "context"])
def test_each_part_of_the_key_gives_its_own_program(store, change):
  traces = []
  x = np.ones((2, 3), np.float32)
  programs.jit(_counting(traces), name="step", static_argnames=("scale",))(_state(), x, scale=1)
  name, scale = "step", 1
  if change == "shape":
    x = np.ones((4, 3), np.float32)
  elif change == "dtype":
    x = np.ones((2, 3), np.int32)
  elif change == "static":
    scale = 2
  elif change == "name":
    name = "other"
  else:
    store.context = "another run's config"
  fn = programs.jit(_counting(traces), name=name, static_argnames=("scale",))
  out = fn(_state(), x, scale=scale)
  assert len(traces) == 2 and len(list(store.folder.iterdir())) == 2
  want = jax.jit(_counting([]), static_argnames="scale")(_state(), x, scale=scale)
  np.testing.assert_array_equal(out[1], want[1])


def test_a_damaged_entry_is_traced_again_and_replaced(store):
  traces = []
  x = np.ones((2, 3), np.float32)
  programs.jit(_counting(traces), name="step", static_argnames=("scale",))(_state(), x, scale=1)
  (path,) = store.folder.iterdir()
  path.write_bytes(b"not a program")
  out = programs.jit(_counting(traces), name="step", static_argnames=("scale",))(
      _state(), x, scale=1)
  assert len(traces) == 2 and path.read_bytes() != b"not a program"
  np.testing.assert_array_equal(out[0].w, np.arange(3.0) + 6)


def test_nothing_is_stored_without_a_name_a_context_or_a_store(store, tmp_path):
  traces = []
  x = np.ones((2, 3), np.float32)
  programs.jit(_counting(traces), name="", static_argnames=("scale",))(_state(), x, scale=1)
  store.context = ""
  programs.jit(_counting(traces), name="step", static_argnames=("scale",))(_state(), x, scale=1)
  programs.install(None)
  programs.jit(_counting(traces), name="step", static_argnames=("scale",))(_state(), x, scale=1)
  assert len(traces) == 3 and not store.folder.exists()


def test_donated_arguments_are_donated_by_the_stored_program(store):
  double = lambda state, x: State(state.w * 2 + x.sum(), state.key)
  fn = programs.jit(double, name="double", donate_argnums=(0,))
  state = State(jnp.arange(3.0), jax.random.key(0))
  out = fn(state, np.ones(2, np.float32))
  np.testing.assert_array_equal(out.w, [2.0, 4.0, 6.0])
  assert state.w.is_deleted()  # written into, as jax.jit(..., donate_argnums=0) does
  out = programs.jit(double, name="double", donate_argnums=(0,))(out, np.ones(2, np.float32))
  np.testing.assert_array_equal(out.w, [6.0, 10.0, 14.0])


def test_runs_store_programs_only_for_simulated_data():
  from prerank_jax.config_files import repo_config
  config = repo_config("quickstart", "smoke")
  store = compile_cache.ProgramStore(compile_cache.Path("unused"))
  previous = programs.install(store)
  try:
    with compile_cache.program_context(config):
      assert len(store.context) == 64
      simulated = store.context
    assert store.context == ""
    other = repo_config("quickstart", "smoke")
    other.seed = 1  # other data: another context
    with compile_cache.program_context(other):
      assert store.context not in ("", simulated)
    with config.unlocked():
      config.dataset = "tabular"
    with compile_cache.program_context(config):
      assert store.context == ""  # files the config does not pin: nothing stored
  finally:
    programs.install(previous)


def test_program_names_ignore_only_the_fields_that_do_not_change_a_program():
  from prerank_jax.config_files import repo_config
  config = repo_config("quickstart", "smoke")
  name = compile_cache.program_name(config, "teacher")
  for field, value in (("name", "other"), ("workdir", "/elsewhere"), ("progress", False)):
    changed = repo_config("quickstart", "smoke")
    changed[field] = value
    assert compile_cache.program_name(changed, "teacher") == name
  changed = repo_config("quickstart", "smoke")
  changed.sweep.temperature, changed.sweep.alpha = (3.0,), (0.7,)  # traced: no new program
  assert compile_cache.program_name(changed, "student") == compile_cache.program_name(
      config, "student")
  changed = repo_config("quickstart", "smoke")
  changed.teacher.learning_rate = 0.5
  assert compile_cache.program_name(changed, "teacher") != name
  assert compile_cache.program_name(config, "student") != name


def test_a_smoke_run_with_stored_programs_equals_one_without(tmp_path):
  """The runner end to end: traced and stored, then loaded, then plain jax.jit; the three
  results.csv files are identical."""
  from prerank_jax.config_files import repo_config
  from prerank_jax.host.runner import run

  def config(name):
    c = repo_config("quickstart", "smoke")
    c.workdir, c.name, c.progress, c.wandb.mode = str(tmp_path), name, False, "disabled"
    c.student.num_epochs = 2
    return c

  folder = tmp_path / "cache"
  previous = programs.install(None)
  try:
    compile_cache.enable_program_store(folder)
    run(config("stored"))
    stored = sorted(p.name for p in (folder / "programs").iterdir())
    assert stored  # the training, scoring and evaluation programs
    run(config("loaded"))
    assert sorted(p.name for p in (folder / "programs").iterdir()) == stored
    programs.install(None)
    run(config("plain"))
  finally:
    programs.install(previous)
  tables = [(tmp_path / n / "results.csv").read_text() for n in ("stored", "loaded", "plain")]
  assert tables[0] == tables[1] == tables[2]


def test_the_plain_jits_methods_are_there():
  fn = programs.jit(lambda x: x * 2, name="double")
  assert fn._cache_size() == 0
  text = fn.lower(np.ones(3, np.float32)).as_text()
  assert "stablehlo.multiply" in text or "mhlo.multiply" in text
  np.testing.assert_array_equal(fn(np.ones(3, np.float32)), [2.0, 2.0, 2.0])


def test_a_jax_setting_that_changes_a_trace_gives_its_own_program(store):
  traces = []
  x = np.ones((2, 3), np.float32)
  fn = programs.jit(_counting(traces), name="step", static_argnames=("scale",))
  fn(_state(), x, scale=1)
  with jax.numpy_rank_promotion("warn"):
    programs.jit(_counting(traces), name="step", static_argnames=("scale",))(
        _state(), x, scale=1)
  assert len(traces) == 2 and len(list(store.folder.iterdir())) == 2


def test_disabled_jit_never_goes_through_the_store(store):
  traces = []
  x = np.ones((2, 3), np.float32)
  with jax.disable_jit():
    programs.jit(_counting(traces), name="step", static_argnames=("scale",))(
        _state(), x, scale=1)
  assert not store.folder.exists()


def test_another_library_version_is_another_context(monkeypatch):
  from prerank_jax.config_files import repo_config
  config = repo_config("quickstart", "smoke")
  store = compile_cache.ProgramStore(compile_cache.Path("unused"))
  previous = programs.install(store)
  try:
    with compile_cache.program_context(config):
      before = store.context
    versions = {**compile_cache.library_versions(), "optax": "0.0.1"}
    monkeypatch.setattr(compile_cache, "library_versions", lambda: versions)
    with compile_cache.program_context(config):
      assert store.context != before
  finally:
    programs.install(previous)
