"""The LETOR parser's compiled path gives exactly what the line parser gives, or defers to it."""

from pathlib import Path

import numpy as np
import pytest

from prerank_jax.data import letor


def _write(path: Path, lines: list[str]) -> Path:
  path.write_text("\n".join(lines) + "\n")
  return path


def _random_lines(seed: int, *, num_queries: int = 9, sparse: bool = True,
                  comments: bool = True, qid_of=lambda q: str(q * 7 + 3)) -> list[str]:
  rng = np.random.default_rng(seed)
  lines = ["# a header comment", ""] if comments else []
  for q in rng.permutation(num_queries):
    for _ in range(rng.integers(1, 6)):
      ids = np.flatnonzero(rng.random(12) < (0.5 if sparse else 1.0)) + (0 if sparse else 1)
      feats = " ".join(f"{i}:{rng.normal() * 10.0 ** rng.integers(-3, 4):.6g}" for i in ids)
      comment = "  # doc" if comments and rng.random() < 0.3 else ""
      lines.append(f"{rng.integers(0, 5)} qid:{qid_of(q)} {feats}{comment}")
  # Interleave two queries so that grouping by id (not by runs of lines) is exercised.
  if sparse:
    lines += [f"1 qid:{qid_of(0)} 2:0.5", f"0 qid:{qid_of(1)} 3:-1.25"]
  else:
    rows = np.round(rng.normal(size=(2, 12)) * 100, 3)
    lines += [f"{y} qid:{qid_of(q)} " + " ".join(f"{i + 1}:{v:g}" for i, v in enumerate(row))
              for y, q, row in ((1, 0, rows[0]), (0, 1, rows[1]))]
  return lines


def _same(a: letor.ParsedFile, b: letor.ParsedFile) -> None:
  assert a.qids == b.qids
  assert a.feature_ids == b.feature_ids
  assert a.qids_in_file == b.qids_in_file
  for x, y in zip(a.labels + a.features, b.labels + b.features, strict=True):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seed,sparse,chunk", [(0, True, 1 << 20), (1, False, 1 << 20),
                                               (2, True, 400)])
def test_compiled_path_equals_line_parser(tmp_path, monkeypatch, seed, sparse, chunk):
  monkeypatch.setattr(letor, "_CHUNK_BYTES", chunk)  # 400 bytes: many chunk boundaries
  path = _write(tmp_path / "train.txt", _random_lines(seed, sparse=sparse))
  fast = letor._parse_compiled(path, None)
  assert fast is not None
  _same(fast, letor._parse_lines(path, None))


@pytest.mark.parametrize("seed,chunk", [(3, 1 << 20), (4, 400)])
def test_column_path_equals_line_parser(tmp_path, monkeypatch, seed, chunk):
  monkeypatch.setattr(letor, "_CHUNK_BYTES", chunk)
  path = _write(tmp_path / "train.txt", _random_lines(seed, sparse=False, comments=False))
  fast = letor._parse_columns(path, None)
  assert fast is not None
  _same(fast, letor._parse_lines(path, None))
  # Sparse or commented files are not for the column path; the line parser agrees with
  # whichever compiled path takes them.
  sparse = _write(tmp_path / "sparse.txt", _random_lines(seed))
  assert letor._parse_columns(sparse, None) is None
  _same(letor.parse_file(sparse), letor._parse_lines(sparse, None))


def test_feature_id_zero_and_group_file(tmp_path):
  path = _write(tmp_path / "train.txt", ["2 0:1.5 3:2", "0 1:1", "1 3:4", "# end"])
  (tmp_path / "train.txt.query").write_text("2\n1\n")
  fast = letor._parse_compiled(path, letor._read_groups(path))
  assert fast is not None and fast.feature_ids == [0, 1, 2, 3] and not fast.qids_in_file
  _same(fast, letor._parse_lines(path, letor._read_groups(path)))


@pytest.mark.parametrize("line", [
    "1 qid:007 1:1",         # a qid the compiled path would rename (7)
    "1 qid:+5 1:1",
    "1 qid:doc-a 1:1",       # not an integer
    "1 qid:3 2:1 1:1",       # unsorted ids: the line parser keeps them
    "1 qid:3 1:1 1:2",       # a repeated id: the line parser keeps the last
    "1 qid:3 1:nan",         # refused by the line parser, with file:line
    "1 qid:3 1:1e39",
    "1.5 qid:3 1:1",
    "1 1:1",                 # no qid and no group file
])
def test_defers_to_the_line_parser(tmp_path, line):
  path = _write(tmp_path / "train.txt", ["2 qid:1 1:0.5", line, "0 qid:1 2:1"])
  assert letor._parse_compiled(path, None) is None
  assert letor._parse_columns(path, None) is None
  dense = _write(tmp_path / "dense.txt", ["2 qid:1 1:0.5", line])  # same token counts
  assert letor._parse_columns(dense, None) is None
  try:
    reference = letor._parse_lines(path, None)
  except ValueError as e:
    with pytest.raises(ValueError, match=str(path) + ":2:"):
      letor.parse_file(path)
    assert "train.txt:2:" in str(e)
  else:
    _same(letor.parse_file(path), reference)
