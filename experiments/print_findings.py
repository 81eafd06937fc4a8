"""Prints every results figure quoted in ``docs/research/results.md`` from the kept raw rows.

Each kept experiment (``experiments/results/<name>/raw.csv``) is judged with its own
claims by the harness (:func:`harness.judge_claims`: one primary metric per claim, Holm
within the experiment, the sign-flip test, the minimum detectable effect), and every
number is rounded once, here, from the raw rows (issue 25: no hand-rounded figures).

What is printed (Markdown, the block between the ``print_findings`` markers of
``docs/research/results.md``; ``tests/experiments/test_print_findings.py`` checks that the
page holds exactly this text):

* one table of distinct findings: a claim whose two sides are bit-identical, world by
  world, to an earlier claim's (the same trained students on the same worlds) is the same
  finding, listed once with the experiments it also appears in; a side (student or
  baseline) seen in an earlier finding of another experiment is named as reused from it;
  the LETOR variants are labelled as the simulator's worlds through the LETOR loader;
* the counts of claims, distinct findings, verdicts and fragile verdicts;
* the ratio of recall@25% to NDCG@10 differences (the reason for the per-metric margins);
* per experiment, the command that re-runs it at 10 worlds and the runtime to expect,
  10 × the kept run's median world (summed ``run_s``), and whether that fits 60 minutes.

Claims whose primary metric is not in the kept rows (the cross-teacher claims declare the
common-reference cascade metric, newer than the kept runs) are listed as not judged
("needs a re-run"), never judged on another metric. E9 runs on RecFlow-shaped worlds
(its data column says so) and stays out of the recall/NDCG ratio.

  python experiments/print_findings.py            # print the block
  python experiments/print_findings.py --check    # exit 1 if the docs page differs
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

RESULTS = harness.RESULTS
DOC = harness.ROOT / "docs" / "research" / "results.md"
BEGIN, END = "<!-- BEGIN print_findings -->", "<!-- END print_findings -->"
# (results directory, script, label), in reading order; LETOR variants last.
EXPERIMENTS = [
    ("simulator_soundness", "simulator_soundness", "soundness"),
    ("e1_exposure", "e1_exposure", "E1"),
    ("e2_hinton", "e2_hinton", "E2"),
    ("e3_ba_caruana", "e3_ba_caruana", "E3"),
    ("e4_ranking_distillation", "e4_ranking_distillation", "E4"),
    ("e5_teacher_quality", "e5_teacher_quality", "E5"),
    ("e6_ensembles", "e6_ensembles", "E6"),
    ("e7_loss_families", "e7_loss_families", "E7"),
    ("e8_pareto", "e8_pareto", "E8"),
    ("e9_recflow", "e9_recflow", "E9"),
    ("e1_exposure_letor", "e1_exposure", "E1-LETOR"),
    ("e2_hinton_letor", "e2_hinton", "E2-LETOR"),
    ("e7_loss_families_letor", "e7_loss_families", "E7-LETOR"),
]
LETOR_DATA = "the simulator's worlds through the LETOR loader"
# E9's worlds are RecFlow-shaped (experiments/recflow_world.py), read by the RecFlow loader.
DATA = {"e9_recflow": "RecFlow-shaped simulated worlds through the RecFlow loader"}
# Findings that follow from another one (same question, or implied by it), by (label,
# claim text) -> [(label, claim text) of what it points to, why]. Checked to resolve.
_E1_ORACLE = ("E1", "the oracle teacher's student beats the learned teacher's student "
                     "(α = 0.5; both cascades re-ranked by the oracle)")
_E5_ORACLE = ("E5", "an oracle teacher's student (α=0.5) beats the quickstart teacher's "
                    "(both cascades re-ranked by the oracle)")
_ORACLE = ("soundness", "the oracle (true relevance) beats the teacher")
FOLLOWS = {
    _E1_ORACLE: [(_ORACLE, "follows from"), (_E5_ORACLE, "the same question, run again in")],
    _E5_ORACLE: [(_ORACLE, "follows from"), (_E1_ORACLE, "the same question, run again in")],
    ("E1-LETOR", _E1_ORACLE[1]): [(_E1_ORACLE, "the LETOR-loader form of")],
}


def experiment_of(results_dir: str, script: str,
                  results: Path = RESULTS) -> harness.Experiment:
  """The experiment definition a results directory was produced by (full, not smoke),
  with the claims its own ``--from-results`` judges: a script with ``judged_claims(exp,
  argv)`` (E9: an arm added after the kept run is named in its summary as not judged)
  leaves those claims out here too, so that this page and its summary agree."""
  module = importlib.import_module(script)
  if script == "e3_ba_caruana":
    exp = module.experiment(module.TEMPERATURES[-1])
  elif hasattr(module, "experiment"):
    exp = module.experiment(False)
  else:
    exp = module.EXPERIMENT
  if results_dir.endswith("_letor"):
    import letor_world
    exp = letor_world.letor_experiment(exp)
  if hasattr(module, "judged_claims"):
    exp = module.judged_claims(exp, ["--from-results", "--out", str(results)])
  return exp


def _side_key(frame: pd.DataFrame, metric: str) -> tuple:
  """A side's per-world values, exactly (the identity of a trained student on its worlds);
  on a metric the rows do not hold (a claim not judged), the rows' own identity."""
  if metric not in frame.columns:
    return ("no " + metric, tuple(sorted(frame.index)))
  values = harness.world_values(frame, metric)
  return tuple((int(w), float(v)) for w, v in values.items())


def _describe(claim: harness.Claim) -> str:
  where = f" {dict(claim.where)}" if claim.where else ""
  role = f" {claim.role}" if claim.role != "student" else ""
  return f"{claim.method}{role}{where}"


def judged(results: Path = RESULTS) -> list[dict[str, Any]]:
  """Every claim of every kept experiment, judged, with the identities of its two sides."""
  out = []
  for results_dir, script, label in EXPERIMENTS:
    raw = results / results_dir / "raw.csv"
    if not raw.exists():
      raise FileNotFoundError(f"{raw}: kept raw rows missing; print_findings needs all "
                              f"{len(EXPERIMENTS)} kept experiments")
    exp = experiment_of(results_dir, script, results)
    frame = harness.load_raw(raw)
    for claim, r in zip(exp.claims, harness.judge_claims(frame, exp.claims, exp.secondary)):
      mine, base, _ = harness._pair_frames(frame, claim)
      out.append({**r, "label": label, "results_dir": results_dir, "script": script,
                  "letor": results_dir.endswith("_letor"), "mine_desc": _describe(claim),
                  "data": DATA.get(results_dir, LETOR_DATA if results_dir.endswith("_letor")
                                   else "simulator"),
                  "mine_key": (results_dir.endswith("_letor"), _side_key(mine, claim.metric)),
                  "base_key": (results_dir.endswith("_letor"), _side_key(base, claim.metric))})
  return out


def distinct_findings(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Claims grouped by the identity of both sides: one entry per distinct comparison."""
  findings: list[dict[str, Any]] = []
  by_key: dict[tuple, dict[str, Any]] = {}
  first_seen: dict[tuple, str] = {}  # side identity -> label of the first finding using it
  merged: dict[tuple, dict[str, Any]] = {}  # (label, claim) of a repeat -> its finding
  for c in claims:
    key = (c["results_dir"], c["claim"]) if c.get("not_judged") else (
        c["mine_key"], c["base_key"], c["metric"])
    if key in by_key:
      by_key[key]["also"].append(c["label"])
      merged[(c["label"], c["claim"])] = by_key[key]
      continue
    reused = []
    for side, what in ((c["mine_key"], "student"), (c["base_key"], "baseline")):
      if side in first_seen and first_seen[side] != c["label"]:
        reused.append(f"{what} reused from {first_seen[side]}")
    for side in (c["mine_key"], c["base_key"]):
      first_seen.setdefault(side, c["label"])
    entry = {**c, "also": [], "reused": reused}
    by_key[key] = entry
    findings.append(entry)
  number = {(f["label"], f["claim"]): i for i, f in enumerate(findings, 1)}
  for repeat, f in merged.items():  # a repeat points to the finding it was counted in
    number[repeat] = number[(f["label"], f["claim"])]
  for i, f in enumerate(findings, 1):
    for target, why in FOLLOWS.get((f["label"], f["claim"]), []):
      if target not in number:
        raise KeyError(f"FOLLOWS: {target} is not a finding of the kept results")
      if number[target] != i:  # the same comparison is already listed under "also in"
        f["reused"].append(f"{why} #{number[target]} ({target[0]})")
  return findings


def _f(x: float, digits: int = 3, sign: bool = True) -> str:
  if not math.isfinite(x):
    return "n/a"
  return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float) -> str:
  return "n/a" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else "< 0.001"


def findings_table(findings: list[dict[str, Any]]) -> str:
  head = ("| # | finding | where (data) | primary metric | Δ [95% t CI] | Holm p (t / sign-flip) "
          "| verdict | MDE (80%) | same comparison also in; reuse |")
  lines = [head, "|---|---|---|---|---|---|---|---|---|"]
  for i, f in enumerate(findings, 1):
    data = f["data"]
    metric = f["metric"] + (f" (±{f['margin']:g})" if f["direction"] == 0 else "")
    ci = f"{_f(f['diff'])} [{_f(f['lo'])}, {_f(f['hi'])}]"
    word = f"{f['verdict']}" + (" (fragile)" if f["fragile"] else "")
    mde = f"{_f(f['mde'], sign=False)}; {harness._needs(f)}"
    notes = ", ".join(f["also"]) if f["also"] else ""
    extra = "; ".join(f["reused"])
    cell = "; ".join(filter(None, [f"also in {notes}" if notes else "", extra])) or "—"
    text = f"{f['claim']} (against {f['against']})".replace("|", "\\|")
    lines.append(f"| {i} | {text} | {f['label']} ({data}) | {metric} | {ci} | "
                 f"{_p(f['holm_t'])} / {_p(f['holm_perm'])} | {word} | {mde} | {cell} |")
  return "\n".join(lines)


def counts(claims: list[dict[str, Any]], findings: list[dict[str, Any]]) -> str:
  words = pd.Series([f["verdict"] for f in findings]).value_counts()
  fragile = sum(f["fragile"] for f in findings)
  flipped = sum(f["verdict"] != f["raw_verdict"] for f in findings if not f.get("not_judged"))
  absent = sum(bool(c.get("not_judged")) for c in claims)
  lines = [f"- claims: {len(claims)} in {len(EXPERIMENTS)} kept experiments, {absent} of them "
           f"not judged (their primary metric is not in the kept rows: they need a re-run); "
           f"distinct findings: {len(findings)} "
           f"({len(claims) - len(findings)} claim(s) repeat an earlier comparison);",
           "- verdicts of the distinct findings (Holm): " + ", ".join(
               f"{w} {int(words.get(w, 0))}" for w in harness.VERDICTS) + ";",
           f"- fragile (the sign-flip test does not reach the call): {fragile} of "
           f"{int(words.get('reproduced', 0) + words.get('not reproduced', 0))} called;",
           f"- verdicts Holm changes from the uncorrected t-interval's: {flipped}."]
  return "\n".join(lines)


def changed_verdicts(findings: list[dict[str, Any]]) -> str:
  """The findings whose verdict differs from the former rule's: the uncorrected 95%
  t-interval on the student's NDCG@10 (equivalence margin ±0.01), as the summaries had it."""
  lines = ["| # | finding | where | former (NDCG@10, uncorrected) | now (primary, Holm) |",
           "|---|---|---|---|---|"]
  for i, f in enumerate(findings, 1):
    old = f["secondary"].get("ndcg@10", {}).get("raw_verdict")
    now = f["verdict"] + (" (fragile)" if f["fragile"] else "")
    if old is not None and old != f["verdict"] and not f.get("not_judged"):
      text = f["claim"].replace("|", "\\|")
      lines.append(f"| {i} | {text} | {f['label']} | {old} | {now} ({f['metric']}) |")
  return "\n".join(lines) if len(lines) > 2 else "None."


def margin_ratio(results: Path = RESULTS) -> str:
  """Median over student points of |Δ recall@25%| / |Δ NDCG@10| against the gt-only student
  of the same runs (simulator experiments; points with |Δ NDCG@10| ≥ 0.005)."""
  ratios = []
  for results_dir, _, _ in EXPERIMENTS:
    if results_dir.endswith("_letor") or results_dir in DATA:  # the quickstart's simulator only
      continue
    frame = harness.load_raw(results / results_dir / "raw.csv")
    diff = {}
    for m in ("ndcg@10", "recall@25%"):
      kept = harness._kept_rows(frame, m)[0]
      kept = kept.assign(value=pd.to_numeric(kept[m], errors="coerce"))
      keys = ["method", "program", "seed"]
      student = kept[kept["role"] == "student"].groupby([*keys, "point"])["value"].mean()
      gt = kept[kept["role"] == harness.GT_ONLY].groupby(keys)["value"].mean()
      d = student.reset_index().merge(gt.rename("gt").reset_index(), on=keys, how="inner")
      d["d"] = d["value"] - d["gt"]  # per world; then the mean over worlds per point
      diff[m] = d.groupby(["method", "program", "point"])["d"].mean()
    both = pd.concat(diff, axis=1).dropna()  # a point lacking either metric has no ratio
    both = both[both["ndcg@10"].abs() >= 0.005]
    ratios += list((both["recall@25%"].abs() / both["ndcg@10"].abs()).to_numpy())
  ratios = np.asarray(ratios, float)
  q1, med, q3 = np.percentile(ratios, [25, 50, 75])
  return (f"Over {ratios.size} student points of the simulator experiments (|Δ NDCG@10| ≥ "
          f"0.005 against the gt-only student of the same runs), |Δ recall@25%| / "
          f"|Δ NDCG@10| has median {med:.2f} (quartiles {q1:.2f} and {q3:.2f}).")


def rerun_table(results: Path = RESULTS, budget_min: float = 60.0) -> str:
  """Per experiment: the command that runs it at 10 worlds, the kept runs' summed
  ``run_s`` (one per method and world; measured on the shared 2-core CPU, under whatever
  load it had then), the median world's time, the time to expect at 10 worlds (10 × the
  median world: one world slowed by a busy machine does not scale up; the first world's
  compilation, 1.1–1.9× a later world in the kept runs, is within the spread) and whether
  that fits ``budget_min`` minutes. A run kept at 10 worlds or more is measured, not
  expected: its first 10 worlds' summed time is what is printed and judged."""
  lines = ["| experiment | command (10 worlds) | worlds kept | kept runs' time | median world "
           f"| expected at 10 worlds | within {budget_min:g} min |",
           "|---|---|---|---|---|---|---|"]
  total = 0.0
  for results_dir, script, label in EXPERIMENTS:
    frame = harness.load_raw(results / results_dir / "raw.csv")
    per_run = frame.groupby(["seed", "method"])["run_s"].first()
    per_world = per_run.groupby(level=0).sum()
    run_s, median = float(per_world.sum()), float(per_world.median())
    measured = len(per_world) >= 10
    expected = float(per_world.sort_index().iloc[:10].sum()) if measured else 10 * median
    total += expected
    flags = " --letor" if results_dir.endswith("_letor") else ""
    if len(experiment_of(results_dir, script, results).world_seeds) < 10:
      flags += " --world-seeds " + " ".join(map(str, range(10)))
    fits = "yes" if expected <= 60 * budget_min else "**no**"
    lines.append(f"| {label} | `python experiments/{script}.py{flags}` | {len(per_world)} | "
                 f"{run_s / 60:.0f} min | {median / 60:.1f} min | "
                 f"{'measured' if measured else 'about'} {expected / 60:.0f} min "
                 f"| {fits} |")
  lines.append(f"| all | | | | | about {total / 3600:.1f} h | |")
  return "\n".join(lines)


def block(results: Path = RESULTS) -> str:
  """The Markdown block ``docs/research/results.md`` holds between its markers."""
  claims = judged(results)
  findings = distinct_findings(claims)
  return "\n\n".join([
      BEGIN,
      "## Distinct findings\n\n" + findings_table(findings),
      "## Counts\n\n" + counts(claims, findings),
      "## Verdicts that differ from the former rule\n\n" + changed_verdicts(findings),
      "## Recall against NDCG differences\n\n" + margin_ratio(results),
      "## Re-running at 10 worlds\n\n" + rerun_table(results),
      END])


def doc_block(path: Path = DOC) -> str:
  """The block between the markers of the docs page (markers included)."""
  text = path.read_text()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{path}: no {BEGIN} … {END} block")
  return text[text.index(BEGIN):text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help=f"exit 1 when {DOC.relative_to(harness.ROOT)} differs")
  parser.add_argument("--write", action="store_true",
                      help=f"replace the block in {DOC.relative_to(harness.ROOT)}")
  parser.add_argument("--doc", type=Path, default=DOC, help="the page to check or write")
  args = parser.parse_args(argv)
  text = block()
  if args.write:
    old = args.doc.read_text()
    args.doc.write_text(old.replace(doc_block(args.doc), text))
  if args.check and doc_block(args.doc) != text:
    print(f"{args.doc}: the figures differ from the kept raw rows; run "
          "python experiments/print_findings.py --write", file=sys.stderr)
    return 1
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
