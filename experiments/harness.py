"""The experiment harness: methods × world seeds through the library's runner, kept raw
rows, mean ± 95% CI over world seeds, paired differences and a verdict per claim.

An experiment is a list of :class:`Method` (a name and dotted config overrides of the
quickstart config) and a list of :class:`Claim`. For every world seed (``config.seed``:
the simulated world, its logs and the teacher) each method is one call of
:func:`prerank_jax.host.runner.run`, the same code the CLI calls. Methods whose teacher
config is the same reuse the first run's teacher of that world (``teacher.restore_from``).
Student replicates (``sweep.seeds``) run inside each world, in the same compiled program.

Rows go to ``<out>/<experiment>/raw.csv`` (one per student point × replicate, gt-only
student, teacher and reference, per method and world seed), appended after every run.
Everything else (``summary.md``, the PNG figures) is computed from ``raw.csv`` alone, so
``--from-results`` rebuilds it without training.

Statistics (the unit of replication is the world seed):

- a row's value in world w is the mean over its replicates in w;
- mean ± 95% CI over worlds: mean ± t_{0.975, n−1} · s / √n (Student t, s with ddof 1;
  :func:`prerank_jax.analysis.t_interval`); undefined (nan) for n < 2;
- the paired difference of a method against the ground-truth-only student of the same
  run (same world, same student config and replicate seeds, α = 0):
  d_w = x_w(method) − x_w(gt-only), then the same t-interval over worlds;
- a claim's verdict: "reproduced" when the CI of d excludes 0 in the claimed direction,
  "not reproduced" when it excludes 0 in the other direction, "inconclusive" when it
  contains 0 (or is undefined). An equivalence claim (direction 0, margin δ) is
  "reproduced" when the CI lies inside [−δ, δ], "not reproduced" when it excludes 0 and
  leaves [−δ, δ], otherwise "inconclusive".
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python experiments/<name>.py` from anywhere
  sys.path.insert(0, str(ROOT))

from prerank_jax.analysis.stats import t_interval  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
GT_ONLY = "gt-only"
METRICS = ("ndcg@10", "recall@25%", "R@(10,25%)", "kendall_tau")
ID_COLUMNS = ("experiment", "method", "seed", "replicate_seed", "model", "point", "role",
              "program")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
_SEED_SUFFIX = re.compile(r" seed=\d+$")
_PROGRAM = re.compile(r"^\[(?P<label>[^\]]*)\]\s*(?P<rest>.*)$")


@dataclasses.dataclass(frozen=True)
class Method:
  """One arm of an experiment: ``overrides`` are ``{dotted config path: value}`` applied to
  the base config, e.g. ``{"student.loss.kd": "logit_mse", "sweep.temperature": (8.0,)}``."""

  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's claim as a paired comparison of one metric.

  ``method``'s student rows matching ``where`` (column values, e.g. ``{"T": 2.0}``) are
  compared with ``against``: ``None`` for the gt-only student of the same runs, otherwise
  another method's student rows matching ``against_where``. ``direction`` is +1 (the
  method is higher), −1 (lower) or 0 (equivalent within ``margin``). ``role`` and
  ``against_role`` pick other rows than students (``"teacher"``, ``"reference"`` with
  ``where={"point": "random"}``, ``"gt-only"``), e.g. to compare two methods' teachers.
  """

  text: str
  method: str
  metric: str
  direction: int = 1
  where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  against: str | None = None
  against_where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  margin: float = 0.0
  source: str = ""
  role: str = "student"
  against_role: str = "student"


# ---------------------------------------------------------------------------- running


def set_path(config: Any, path: str, value: Any) -> None:
  """``config.<path> = value`` for a dotted path of a locked ConfigDict (a typo fails)."""
  *parents, leaf = path.split(".")
  node = config
  for part in parents:
    try:
      node = node[part]
    except KeyError:
      raise KeyError(f"{path}: no field {part!r} in the config") from None
  if leaf not in node:
    raise KeyError(f"{path}: no field {leaf!r} in the config")
  node[leaf] = value


def base_config(world_seed: int, *, smoke: bool, replicates: Sequence[int] = (),
                base: str = "quickstart"):
  """The config ``configs/<base>.py`` (default the quickstart's; ``smoke``: its tiny form,
  shortened further) for one world."""
  from prerank_jax.config_files import repo_config
  config = repo_config(base, "smoke" if smoke else None)
  config.seed = int(world_seed)
  config.progress, config.wandb.mode, config.checkpoint_every = False, "disabled", 0
  config.sweep.seeds = tuple(int(s) for s in replicates)
  if smoke:  # seconds: the student's epochs cut; the teacher keeps the smoke config's 2,
    config.student.num_epochs = 2  # so that E5's under-trained (1 epoch) teacher differs
  return config


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "method"


def rows_of_run(result_rows: Sequence[Mapping[str, Any]], *, experiment: str, method: str,
                world_seed: int, run_s: float) -> list[dict[str, Any]]:
  """The runner's result rows as raw rows: ids first, then every runner column."""
  out = []
  for row in result_rows:
    model = str(row["model"])
    program, point = "", model
    if model.startswith("student "):
      rest = model[len("student "):]
      m = _PROGRAM.match(rest)
      if m:
        program, rest = m["label"], m["rest"]
      point = _SEED_SUFFIX.sub("", rest)
      role = GT_ONLY if point.startswith("gt-only") else "student"
    else:
      role = "teacher" if model == "teacher" else "reference"
    replicate = row.get("replicate_seed", world_seed if role in ("student", GT_ONLY) else "")
    ids = {"experiment": experiment, "method": method, "seed": int(world_seed),
           "replicate_seed": replicate, "model": model, "point": point, "role": role,
           "program": program}
    rest = {k: v for k, v in row.items() if k not in ids and k != "model"}
    out.append({**ids, **rest, "run_s": round(run_s, 2)})
  return out


def append_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
  """Appends rows to a CSV; a new column rewrites the file with the union of columns."""
  path.parent.mkdir(parents=True, exist_ok=True)
  old_columns, old_rows = [], []
  if path.exists():
    with path.open(newline="") as f:
      reader = csv.DictReader(f)
      old_columns, old_rows = list(reader.fieldnames or []), list(reader)
  columns = list(old_columns)
  for row in rows:
    columns += [c for c in row if c not in columns]
  if columns == old_columns:
    with path.open("a", newline="") as f:
      csv.DictWriter(f, fieldnames=columns).writerows(rows)
    return
  tmp = path.with_suffix(".tmp")
  with tmp.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows([*old_rows, *rows])
  tmp.replace(path)


def run_methods(experiment: str, methods: Sequence[Method], world_seeds: Sequence[int], *,
                out: Path, smoke: bool, replicates: Sequence[int] = (),
                configure: Callable[[Any, Method], None] | None = None,
                base: str = "quickstart", log: Callable[[str], None] = print) -> Path:
  """Runs every method in every world through the runner and appends the rows.

  Args:
    experiment: the experiment's name; rows go to ``<out>/<experiment>/raw.csv`` (a fresh
      file: an old one is replaced).
    methods: the arms; each is one runner call per world. Names must be distinct.
    world_seeds: ``config.seed`` of each world (data, teacher); ≥ 2 for a CI.
    out: results root, e.g. ``experiments/results``.
    smoke: the tiny simulator preset and a few epochs.
    replicates: ``sweep.seeds`` (student replicates inside each world); ``()``: one.
    configure: optional ``f(config, method)`` run after the overrides, with
      ``config.workdir`` set (for settings an override cannot express, or files a run
      reads, such as the LETOR files of ``--letor``).
    base: the config file the methods override (``configs/<base>.py``).
    log: progress lines.

  Returns:
    The path of ``raw.csv``.
  """
  from prerank_jax.host.identity import teacher_identity
  from prerank_jax.host.runner import run
  names = [m.name for m in methods]
  if len(set(names)) != len(names):
    raise ValueError(f"methods: names must be distinct, got {names}")
  if not world_seeds:
    raise ValueError("world_seeds: needs at least one world seed")
  raw = out / experiment / "raw.csv"
  raw.unlink(missing_ok=True)
  with tempfile.TemporaryDirectory(prefix=f"{experiment}-") as workdir:
    for world in world_seeds:
      teachers: dict[str, str] = {}  # teacher identity -> run dir holding that teacher
      for i, method in enumerate(methods):
        config = base_config(world, smoke=smoke, replicates=replicates, base=base)
        for path, value in method.overrides.items():
          set_path(config, path, value)
        config.workdir, config.name = workdir, f"w{world}-{i}-{_slug(method.name)}"
        if configure is not None:
          configure(config, method)
        identity = teacher_identity(config)
        if identity in teachers and not config.teacher.restore_from:
          config.teacher.restore_from = teachers[identity]
        t0 = time.perf_counter()
        result = run(config)
        run_s = time.perf_counter() - t0
        teachers.setdefault(identity, str(result.run_dir))
        append_rows(raw, rows_of_run(result.rows, experiment=experiment, method=method.name,
                                     world_seed=world, run_s=run_s))
        log(f"{experiment}: world {world} {method.name}: {run_s:.1f} s")
  return raw


# ----------------------------------------------------------------------- statistics


def load_raw(path: Path) -> pd.DataFrame:
  """``raw.csv`` as a DataFrame (blank numbers NaN; blank names ``""``)."""
  frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
  for column in ("experiment", "method", "model", "point", "role", "program"):
    if column in frame.columns:
      frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
  return frame


def verdict(lo: float, hi: float, direction: int, margin: float = 0.0) -> str:
  """The verdict of a claim from the CI ``[lo, hi]`` of its paired difference.

  ``direction`` +1 / −1: "reproduced" if the CI excludes 0 on the claimed side, "not
  reproduced" if it excludes 0 on the other side, else "inconclusive". ``direction`` 0
  (equivalence within ``margin`` ≥ 0): "reproduced" if ``[lo, hi] ⊂ [−margin, margin]``,
  "not reproduced" if the CI excludes 0 and is not inside, else "inconclusive". A
  non-finite bound (fewer than 2 worlds) is "inconclusive".
  """
  if direction not in (-1, 0, 1):
    raise ValueError(f"direction: must be -1, 0 or 1, got {direction!r}")
  if margin < 0:
    raise ValueError(f"margin: must be >= 0, got {margin!r}")
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "inconclusive"
  if lo > hi:
    raise ValueError(f"lo, hi: need lo <= hi, got [{lo}, {hi}]")
  if direction == 0:
    if -margin <= lo and hi <= margin:
      return "reproduced"
    return "not reproduced" if (lo > 0 or hi < 0) else "inconclusive"
  if (lo > 0 and direction > 0) or (hi < 0 and direction < 0):
    return "reproduced"
  if lo > 0 or hi < 0:
    return "not reproduced"
  return "inconclusive"


def _select(frame: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
  mask = np.ones(len(frame), bool)
  for column, value in where.items():
    if column not in frame.columns:
      raise ValueError(f"where: no column {column!r} in the raw rows")
    col = frame[column]
    if isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool):
      mask &= np.isclose(pd.to_numeric(col, errors="coerce").to_numpy(float), value)
    else:
      mask &= (col.astype(str) == str(value)).to_numpy()
  return frame[mask]


def world_values(frame: pd.DataFrame, metric: str) -> pd.Series:
  """The metric per world seed: the mean over the rows (replicates) of each world."""
  values = pd.to_numeric(frame[metric], errors="coerce")
  return values.groupby(frame["seed"]).mean()


def paired_interval(a: pd.Series, b: pd.Series) -> dict[str, float]:
  """Mean ± 95% t-interval of ``a_w − b_w`` over the worlds present in both."""
  d = (a - b).dropna()
  mean, half, n = t_interval(d.to_numpy(float))
  return {"diff": mean, "ci": half, "lo": mean - half, "hi": mean + half, "n": n}


def claim_result(frame: pd.DataFrame, claim: Claim) -> dict[str, Any]:
  """The paired difference of a claim over world seeds and its verdict."""
  mine = _select(frame[(frame["method"] == claim.method) & (frame["role"] == claim.role)],
                 claim.where)
  if not len(mine):
    raise ValueError(f"claim {claim.text!r}: no {claim.role} rows of method {claim.method!r} "
                     f"matching {dict(claim.where)}")
  if claim.against is None:
    base = frame[(frame["method"] == claim.method) & (frame["role"] == GT_ONLY)]
    base = base[base["program"].isin(set(mine["program"]))]
    against = f"{GT_ONLY} (same runs)"
  else:
    base = _select(frame[(frame["method"] == claim.against)
                         & (frame["role"] == claim.against_role)], claim.against_where)
    against = (claim.against + (f" {claim.against_role}" if claim.against_role != "student"
                                else "")
               + (f" {dict(claim.against_where)}" if claim.against_where else ""))
  if not len(base):
    raise ValueError(f"claim {claim.text!r}: no rows to compare against ({against})")
  stats = paired_interval(world_values(mine, claim.metric), world_values(base, claim.metric))
  return {"claim": claim.text, "metric": claim.metric, "against": against, **stats,
          "verdict": verdict(stats["lo"], stats["hi"], claim.direction, claim.margin),
          "source": claim.source}


def point_table(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
  """One row per (method, program, role, point): mean ± CI over worlds of each metric and,
  for students, the paired difference against the gt-only student of the same runs."""
  out = []
  keys = ["method", "program", "role", "point"]
  for key, group in frame.groupby(keys, sort=False, dropna=False):
    row = dict(zip(keys, key))
    row["worlds"] = int(group["seed"].nunique())
    row["replicates"] = int(group.groupby("seed").size().max())
    base = frame[(frame["method"] == row["method"]) & (frame["role"] == GT_ONLY)
                 & (frame["program"] == row["program"])]
    for m in metrics:
      values = world_values(group, m)
      mean, half, _ = t_interval(values.to_numpy(float))
      row[m], row[f"{m}_ci"] = mean, half
      if row["role"] == "student" and len(base):
        d = paired_interval(values, world_values(base, m))
        row[f"{m}_diff"], row[f"{m}_diff_ci"] = d["diff"], d["ci"]
    for c in ("T", "alpha", "params", "flops/cand"):
      if c in group.columns:
        row[c] = pd.to_numeric(group[c], errors="coerce").mean()
    out.append(row)
  return pd.DataFrame(out)


def _pm(mean: float, half: float, digits: int = 3) -> str:
  if not math.isfinite(mean):
    return "n/a"
  return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def markdown_points(table: pd.DataFrame, metrics: Sequence[str], diff_metric: str) -> str:
  """The per-point table as Markdown: metrics mean ± CI, and Δ vs gt-only ± CI."""
  head = ["method", "point", "worlds × replicates", *metrics, f"Δ {diff_metric} vs gt-only"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for _, r in table.iterrows():
    name = r["point"] if r["role"] != "student" or not r["program"] else f"[{r['program']}] {r['point']}"
    diff = (_pm(r.get(f"{diff_metric}_diff", math.nan), r.get(f"{diff_metric}_diff_ci", math.nan))
            if r["role"] == "student" else "")
    lines.append("| " + " | ".join([str(r["method"]), str(name),
                                     f"{r['worlds']} × {r['replicates']}",
                                     *(_pm(r[m], r[f"{m}_ci"]) for m in metrics), diff]) + " |")
  return "\n".join(lines)


def markdown_claims(results: Sequence[Mapping[str, Any]]) -> str:
  lines = ["| claim | metric | against | paired Δ (95% CI) | worlds | verdict |",
           "|---|---|---|---|---|---|"]
  for r in results:
    ci = (f"{r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]" if math.isfinite(r["ci"])
          else f"{r['diff']:+.4f} [CI undefined]")
    claim = str(r["claim"]).replace("|", "\\|")  # a literal |Δ| must not split the cell
    lines.append(f"| {claim} | {r['metric']} | {r['against']} | {ci} | {r['n']} | "
                 f"**{r['verdict']}** |")
  return "\n".join(lines)


def write_summary(out_dir: Path, *, title: str, command: str, frame: pd.DataFrame,
                  claims: Sequence[Claim], metrics: Sequence[str], diff_metric: str,
                  figures: Sequence[Path], notes: str = "") -> str:
  """``summary.md``: the command, the claims with verdicts, the per-point table, the
  figures; returns its text."""
  results = [claim_result(frame, c) for c in claims]
  table = point_table(frame, metrics)
  worlds = sorted(int(s) for s in frame["seed"].unique())
  smoke = "smoke" in set(frame.get("preset", pd.Series(dtype=str)).astype(str))
  text = "\n\n".join(filter(None, [
      f"# {title}",
      f"Produced by `{command}` (rebuild without training: add `--from-results`). "
      f"World seeds {worlds}; mean ± 95% t-interval over worlds (replicates averaged "
      f"within each world); Δ = paired difference against the ground-truth-only student "
      f"of the same runs (same world, same replicate seeds, α = 0)."
      + (" **Smoke run: tiny preset, 2 epochs, not a result.**" if smoke else ""),
      "## Claims\n\n" + markdown_claims(results),
      "## Every point\n\n" + markdown_points(table, metrics, diff_metric),
      notes,
      "## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures),
  ])) + "\n"
  (out_dir / "summary.md").write_text(text)
  return text


# ---------------------------------------------------------------------------- figures


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig: Any, path: Path, *, tight: bool = True) -> Path:
  """Lays out (``tight``), writes at 110 dpi and closes ``fig``; returns ``path``."""
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=110)
  pyplot().close(fig)
  return path


def diff_bars(table: pd.DataFrame, metric: str, path: Path, *, title: str,
              label: Callable[[pd.Series], str] | None = None) -> Path:
  """Horizontal bars: each student point's paired Δ ``metric`` vs gt-only with its CI."""
  plt = pyplot()
  rows = table[table["role"] == "student"]
  label = label or (lambda r: f"{r['method']} {r['point']}")
  names = [label(r) for _, r in rows.iterrows()]
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
  y = np.arange(len(rows))
  err = np.nan_to_num(rows[f"{metric}_diff_ci"].to_numpy(float))
  ax.barh(y, rows[f"{metric}_diff"].to_numpy(float), xerr=err, color="tab:blue", alpha=0.7,
          capsize=3)
  ax.axvline(0.0, color="k", lw=0.8)
  ax.set_yticks(y, names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel(f"Δ {metric} vs gt-only student (95% CI over world seeds)")
  ax.set_title(title, fontsize=10)
  return save_figure(fig, path)


# ------------------------------------------------------------------------------- main


@dataclasses.dataclass
class Experiment:
  """An experiment script's definition, run by :func:`main`.

  ``methods(smoke)`` lists the arms; ``claims`` the verdicts to compute; ``figures(frame,
  table, out_dir)`` draws the PNGs from the raw rows (and returns their paths);
  ``notes(frame)`` adds Markdown (e.g. a numerical check) to the summary.
  """

  name: str
  title: str
  methods: Callable[[bool], Sequence[Method]]
  claims: Sequence[Claim]
  figures: Callable[[pd.DataFrame, pd.DataFrame, Path], list[Path]]
  metrics: Sequence[str] = METRICS
  diff_metric: str = "ndcg@10"
  world_seeds: Sequence[int] = (0, 1, 2, 3, 4)
  replicates: Sequence[int] = (0, 1)
  notes: Callable[[pd.DataFrame], str] | None = None
  configure: Callable[[Any, Method], None] | None = None
  base: str = "quickstart"  # the config file the methods override: configs/<base>.py


def summarize(exp: Experiment, out_dir: Path, command: str) -> str:
  """Rebuilds ``summary.md`` and the figures from ``<out_dir>/raw.csv``."""
  raw = out_dir / "raw.csv"
  if not raw.exists():
    raise FileNotFoundError(f"{raw}: no raw results; run the experiment first")
  frame = load_raw(raw)
  table = point_table(frame, exp.metrics)
  figures = exp.figures(frame, table, out_dir)
  return write_summary(out_dir, title=exp.title, command=command, frame=frame,
                       claims=exp.claims, metrics=exp.metrics, diff_metric=exp.diff_metric,
                       figures=figures, notes=exp.notes(frame) if exp.notes else "")


def use_compilation_cache(path: Path | None = None) -> None:
  """Turns on JAX's persistent compilation cache (unless ``JAX_COMPILATION_CACHE_DIR`` set
  one already).

  Every world of an experiment, and every method with the same structure, compiles the
  same programs (the data are arguments, not constants); with the cache only the first
  compiles them. On the tiny smoke preset, where compilation is most of the time, a
  world's runs went from 153 s and 118 s to 22 s and 7 s (on a loaded 2-core CPU).
  """
  import os
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  path = path or Path.home() / ".cache" / "prerank-jax" / "xla"
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(exp: Experiment, argv: Sequence[str] | None = None) -> Path:
  """The command line every experiment script shares.

  ``--smoke``: tiny preset, 2 world seeds, 2 epochs (seconds; results go to
  ``<out>/<name>-smoke/``). ``--from-results``: rebuild the summary and figures from the
  kept ``raw.csv`` without training. ``--letor``: the same methods on the world written as
  LETOR files (``experiments/letor_world.py``; results in ``<out>/<name>_letor/``).
  Returns the results directory.
  """
  parser = argparse.ArgumentParser(description=exp.title)
  parser.add_argument("--smoke", action="store_true", help="tiny preset, 2 world seeds")
  parser.add_argument("--letor", action="store_true",
                      help="the world as LETOR files through the LETOR loader")
  parser.add_argument("--from-results", action="store_true",
                      help="rebuild summary.md and figures from raw.csv, no training")
  parser.add_argument("--world-seeds", type=int, nargs="+", default=None)
  parser.add_argument("--replicates", type=int, nargs="*", default=None,
                      help="sweep.seeds inside each world (student replicates)")
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args(argv)
  script = f"experiments/{exp.name}.py"
  if args.letor:
    from letor_world import letor_experiment
    exp = letor_experiment(exp)
  use_compilation_cache()
  out_dir = Path(args.out) / (f"{exp.name}-smoke" if args.smoke else exp.name)
  command = " ".join(["python", script, *map(shlex.quote, argv if argv is not None
                                               else sys.argv[1:])])
  if not args.from_results:
    worlds = args.world_seeds or ((0, 1) if args.smoke else exp.world_seeds)
    replicates = args.replicates if args.replicates is not None else (
        exp.replicates[:2] if args.smoke else exp.replicates)
    t0 = time.perf_counter()
    raw = run_methods(out_dir.name, exp.methods(args.smoke), worlds,
                      out=out_dir.parent, smoke=args.smoke, replicates=replicates,
                      configure=exp.configure, base=exp.base)
    frame = load_raw(raw)
    frame["preset"] = "smoke" if args.smoke else "small"
    frame.to_csv(raw, index=False)
    print(f"{exp.name}: trained in {time.perf_counter() - t0:.0f} s; rows in {raw}")
  else:
    command = command.replace(" --from-results", "")
  t0 = time.perf_counter()
  text = summarize(exp, out_dir, command)
  print(text)
  print(f"{exp.name}: summary and figures in {out_dir} ({time.perf_counter() - t0:.1f} s)")
  return out_dir
