"""The CLI turns JAX's persistent compilation cache on by default, off with a flag, and a
second process reads what the first compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from prerank_jax import cli
from prerank_jax.host import compile_cache

ROOT = Path(__file__).resolve().parents[2]
_KEYS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
         "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture
def restore_jax_config():
  saved = {k: getattr(jax.config, k) for k in _KEYS}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)


def test_cli_turns_the_cache_on_by_default_and_off_with_the_flag(tmp_path, monkeypatch,
                                                                 restore_jax_config):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "xla"))
  # `eval` of a folder that is no run returns 2 at once, after the cache is set.
  assert cli.main(["prerank-jax", "eval", str(tmp_path / "no_run")]) == 2
  assert jax.config.jax_enable_compilation_cache
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  assert (tmp_path / "xla").is_dir()
  assert cli.main(["prerank-jax", "eval", "--no-compile-cache", str(tmp_path / "no_run")]) == 2
  assert not jax.config.jax_enable_compilation_cache
  assert jax.config.jax_compilation_cache_dir is None
  # The flag is taken out before the command sees it; the variable can turn it off too.
  assert cli.set_compile_cache(["p", "sweep", "--no-compile-cache", "--config=x"]) == [
      "p", "sweep", "--config=x"]
  monkeypatch.setenv(compile_cache.ENV_VAR, "off")
  assert compile_cache.enable_compilation_cache() is None
  assert not jax.config.jax_enable_compilation_cache
  monkeypatch.delenv(compile_cache.ENV_VAR)
  assert compile_cache.cache_dir() == compile_cache.DEFAULT_DIR


_CHILD = """
import sys
import jax, jax.numpy as jnp
from prerank_jax.cli import set_compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
set_compile_cache(["prerank-jax", "sweep", *sys.argv[1:]])
print(float(jax.jit(lambda x: jnp.sort(x * 3.0 + 1.0)[0])(jnp.arange(5.0))), len(hits))
"""


def test_a_second_process_reads_the_cache(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env[compile_cache.ENV_VAR] = str(tmp_path / "xla")
  run = lambda *flags: subprocess.run([sys.executable, "-c", _CHILD, *flags], env=env,
                                      cwd=ROOT, capture_output=True, text=True, check=True
                                      ).stdout.split()
  files = lambda: sorted(p.name for p in (tmp_path / "xla").rglob("*") if p.is_file())
  value, hits = run()
  assert (value, hits) == ("1.0", "0")  # compiled and written
  written = files()
  assert written
  value, hits = run()
  assert value == "1.0" and int(hits) >= 1  # read back, nothing new written
  assert files() == written
  assert run("--no-compile-cache") == ["1.0", "0"]  # off: compiled again
