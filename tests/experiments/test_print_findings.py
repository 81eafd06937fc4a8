"""docs/research/results.md quotes only figures that experiments/print_findings.py prints
from the kept raw rows (issue 25: no hand-rounded numbers), and the findings table lists
each comparison once (issue 23 item 8)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import print_findings  # noqa: E402


@pytest.fixture(scope="module")
def block():
  return print_findings.block()


def test_results_page_holds_exactly_the_printed_figures(block):
  assert print_findings.doc_block() == block


def test_a_hand_edited_figure_fails_the_check(block, tmp_path, capsys):
  """The planted defect: one interval bound of the page changed by 0.001 by hand."""
  page = print_findings.DOC.read_text()
  target = next(line for line in block.splitlines() if line.startswith("| 1 |"))
  lo = target.split("[")[1].split(",")[0]
  edited = target.replace(f"[{lo},", f"[{float(lo) + 0.001:+.3f},")
  assert edited != target
  copy = tmp_path / "results.md"
  copy.write_text(page.replace(target, edited))
  assert print_findings.main(["--check", "--doc", str(copy)]) == 1
  assert "differ from the kept raw rows" in capsys.readouterr().err
  copy.write_text(page)
  assert print_findings.main(["--check", "--doc", str(copy)]) == 0


def test_each_comparison_is_listed_once(block):
  """Findings are keyed by both sides' exact per-world values: the table has as many rows
  as distinct keys, LETOR variants are labelled as the simulator's worlds, and every
  follow-up note resolves to a listed finding."""
  claims = print_findings.judged()
  findings = print_findings.distinct_findings(claims)
  keys = {(c["mine_key"], c["base_key"], c["metric"]) for c in claims}
  assert len(findings) == len(keys) <= len(claims)
  rows = [line for line in block.split("## Distinct findings")[1].split("## ")[0].splitlines()
          if line.startswith("| ") and not line.startswith("| #")]
  assert len(rows) == len(findings)
  letor = [r for r in rows if "-LETOR (" in r]
  assert letor and all(print_findings.LETOR_DATA in r for r in letor)
  assert any("follows from #" in r for r in rows)


def test_identical_sides_make_one_finding_and_reuse_is_named():
  side = lambda *v: (False, tuple(enumerate(v)))
  base = {"metric": "recall@25%", "letor": False}
  claims = [
      {**base, "label": "E1", "claim": "a", "mine_key": side(0.6, 0.7), "base_key": side(0.5, 0.6)},
      {**base, "label": "E2", "claim": "a again", "mine_key": side(0.6, 0.7),
       "base_key": side(0.5, 0.6)},
      {**base, "label": "E3", "claim": "b", "mine_key": side(0.65, 0.7),
       "base_key": side(0.5, 0.6)},
  ]
  findings = print_findings.distinct_findings(claims)
  assert [f["claim"] for f in findings] == ["a", "b"]
  assert findings[0]["also"] == ["E2"]
  assert findings[1]["reused"] == ["baseline reused from E1"]


def test_a_follow_up_to_a_repeat_points_to_the_finding_it_was_counted_in(monkeypatch):
  """E1's and E5's oracle claims became bit-identical at 10 worlds: the repeat is counted
  in the first one's "also", a pointer to it resolves to that finding's number, and a
  pointer from a finding to itself is not printed."""
  side = lambda *v: (False, tuple(enumerate(v)))
  base = {"metric": "recall@25%", "letor": False}
  claims = [
      {**base, "label": "S", "claim": "root", "mine_key": side(0.9, 0.9), "base_key": side(0.1, 0.2)},
      {**base, "label": "E1", "claim": "a", "mine_key": side(0.6, 0.7), "base_key": side(0.5, 0.6)},
      {**base, "label": "E5", "claim": "a'", "mine_key": side(0.6, 0.7), "base_key": side(0.5, 0.6)},
      {**base, "label": "E7", "claim": "c", "mine_key": side(0.3, 0.7), "base_key": side(0.2, 0.6)},
  ]
  monkeypatch.setattr(print_findings, "FOLLOWS", {
      ("E1", "a"): [(("S", "root"), "follows from"), (("E5", "a'"), "run again in")],
      ("E7", "c"): [(("E5", "a'"), "compare")]})
  findings = print_findings.distinct_findings(claims)
  assert [f["claim"] for f in findings] == ["root", "a", "c"]
  assert findings[1]["also"] == ["E5"]
  assert findings[1]["reused"] == ["follows from #1 (S)"]
  assert findings[2]["reused"] == ["compare #2 (E5)"]
  monkeypatch.setattr(print_findings, "FOLLOWS", {("E7", "c"): [(("E9", "z"), "x")]})
  with pytest.raises(KeyError, match="not a finding"):
    print_findings.distinct_findings(claims)


def test_rerun_table_measures_a_kept_10_world_run_and_expects_the_others(block):
  """A run kept at 10 worlds or more is judged on its measured time (its first 10 worlds'
  summed ``run_s``); a shorter one on 10 × its median world."""
  import harness
  table = block.split("## Re-running at 10 worlds")[1]
  rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()
          if line.startswith("| ") and not line.startswith("| experiment")}
  for results_dir, _, label in print_findings.EXPERIMENTS:
    frame = harness.load_raw(print_findings.RESULTS / results_dir / "raw.csv")
    per_world = frame.groupby(["seed", "method"])["run_s"].first().groupby(level=0).sum()
    if len(per_world) >= 10:
      expected, word = per_world.sort_index().iloc[:10].sum(), "measured"
    else:
      expected, word = 10 * per_world.median(), "about"
    assert f"| {word} {expected / 60:.0f} min |" in rows[label], label
    assert rows[label].endswith("| yes |" if expected <= 3600 else "| **no** |"), label
