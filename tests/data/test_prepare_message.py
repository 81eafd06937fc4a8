"""Preparing a dataset prints one line saying what is prepared and where, not TFDS's
"Downloading and preparing dataset Unknown size (download: Unknown size, ...)" lines:
nothing is downloaded."""

from __future__ import annotations


def test_preparing_prints_one_line_and_reusing_prints_none(tmp_path, capfd):
  from prerank_jax.data import simulator_tfds

  simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0, data_dir=str(tmp_path))
  out, err = capfd.readouterr()
  lines = [line for line in out.splitlines() if line.strip()]
  assert len(lines) == 1, lines
  assert lines[0].startswith("preparing dataset prerank_simulator/")
  assert f" in {tmp_path}" in lines[0] and "nothing is downloaded" in lines[0]
  assert "Downloading" not in out + err and "Unknown size" not in out + err
  assert "Subsequent calls will reuse" not in out + err

  simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0, data_dir=str(tmp_path))
  assert "preparing" not in capfd.readouterr().out  # prepared once, then reused
