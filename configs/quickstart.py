"""Quickstart: simulator → teacher → 2×2 (T, α) distillation sweep → evaluation.

Launch:
  prerank-jax quickstart                                  # this config: seconds on a CPU
  prerank-jax quickstart --config=configs/quickstart.py:smoke   # tiny, for tests
  prerank-jax quickstart --config=configs/quickstart.py:full    # the experiments' size
  prerank-jax quickstart --config.sweep.temperature="(1.,2.,5.)" --config.name=t_grid

Sizes (every other field is the same in all three):
  (none)  the "small" simulator with 1,000 train and 250 validation/test requests (lists of
          60–100, 10 exposed); the teacher (MLP 256-256-128) for 5 epochs at learning rate
          3e-3; students 5 epochs; T ∈ {1, 4} × α ∈ {0.5, 1} plus the gt-only student.
  full    the "small" simulator as shipped (2,000 / 500 requests); the teacher for 8 epochs
          at 1e-3; students 20 epochs; T ∈ {1, 2, 5} × α ∈ {0.5, 0.9, 1}. The
          experiments (experiments/harness.py), the configs built on this one
          (``quickstart_based``) and the benchmarks use it.
  smoke   the "tiny" simulator, 2 teacher and 4 student epochs, batches of 16, full's grid.

Expected runtime, as measured (``python benchmarks/quickstart_run.py``, kept in
``benchmarks/results/quickstart/``, a 2-core CPU): see docs/benchmarks.md.
Expected result: every distilled student beats the gt-only student and the random reference
and tracks the teacher (R@(10,25%) well above the keep ratio); see docs/start/quickstart.md.

The sweep runs every (T, α) point plus a ground-truth-only student (α = 0) as one vmapped
program; the teacher is trained once and its scores are reused by every point.
"""

from __future__ import annotations

import ml_collections

from prerank_jax.data.simulator import PRESETS
from prerank_jax.data.sources import SOURCE_DEFAULTS
from prerank_jax.losses.registry import HPARAMS, STATIC_OPTIONS
from prerank_jax.models import model_config


def _role(model: dict, *, num_epochs: int, batch_size: int, kd: str) -> dict:
  return dict(
      model=model,
      loss=dict(kd=kd, gt="bce", ensemble="mean_logits", gt_weighting="none",
                propensity_floor=0.05,  # propensities below it count as it (IPS)
                ensemble_weights=(),  # per-teacher weights for the ensemble; () = uniform
                # Static (shape-changing) options of every registered loss.
                options={n: o.default for n, o in STATIC_OPTIONS.items()}),
      num_epochs=num_epochs,
      batch_size=batch_size,
      epochs_per_chunk=1,
      # The forward pass's dtype: "float32", or "bfloat16" (matmuls in bf16 on TPUs and
      # recent GPUs; parameters, optimizer state and loss stay float32).
      compute_dtype="float32",
      # How Adam updates ID embedding tables (dssm, din): "sparse" touches only the rows a
      # step looks up (lazy Adam), "dense" every row (docs/guides/id_features.md).
      embedding_update="sparse",
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked quickstart config: ``arg=None`` the seconds-long quickstart,
  ``"full"`` the experiments' size, ``"smoke"`` a tiny one for tests (module docstring)."""
  if arg not in (None, "", "smoke", "full"):
    raise ValueError(f"configs/quickstart.py: unknown argument {arg!r}; use 'full', "
                     "'smoke' or nothing")
  smoke, full = arg == "smoke", arg == "full"
  quick = not (smoke or full)
  config = ml_collections.ConfigDict()
  config.name = "quickstart"
  config.workdir = "runs"
  config.overwrite = False
  config.seed = 0
  config.progress = True
  config.resume = False          # continue <workdir>/<name> from its newest checkpoint
  config.checkpoint_every = 5    # chunks between Orbax checkpoints (and after the last)
  config.wandb = dict(mode="offline", project="prerank-jax")  # offline|online|disabled
  # Multi-host: start one process per host with the same config and its own process_id
  # (see the README). num_processes=1 runs alone.
  config.distributed = dict(coordinator_address="", num_processes=1, process_id=0,
                            cpu_devices_per_process=0)

  config.dataset = "simulator"   # or simulator_tfds, letor, mslr_web/10k_fold1, movielens,
  config.data = dict(PRESETS["tiny" if smoke else "small"])  # tabular: prerank_jax/data/registry.py
  if quick:  # half the train requests, half the evaluation requests of "small"
    config.data.update(num_requests=1000, num_eval_requests=250)
  # Real datasets (TFDS builders written as ArrayRecord; prepared once, then reused). Each
  # reads the fields it needs; configs/{letor,movielens,tabular}.py set them up.
  config.source = dict(SOURCE_DEFAULTS)  # every field, documented in prerank_jax/data/sources.py
  # Input pipeline: "device" keeps the train split on device (lax.scan); "grain" streams
  # batches from the host (prerank_jax/data/streaming.py). order="device" feeds every sweep
  # point its device-resident order exactly; "shared" one grain-shuffled order to all;
  # "block" per-point orders inside a shared block of steps_per_call steps (each record
  # read once a call, for per-point orders from files).
  # read_from="records" reads a TFDS dataset's ArrayRecord files instead of host memory.
  # steps_per_call steps are read as one grain element and run as one compiled call.
  config.input_pipeline = "device"
  config.streaming = dict(order="device", read_from="memory", worker_count=0,
                          num_threads=2, prefetch=4, steps_per_call=8)

  # Model fields: name plus every option of prerank_jax.models.MODEL_OPTIONS (each model
  # reads its own; see MODELS). Students: linear, mlp_student, two_tower, int_tower;
  # teachers: mlp_teacher, dcn_v2, oracle (and the ablation mlp_heavy_no_cross).
  # Teacher quality knobs: under-trained --config.teacher.num_epochs=1; over-parameterised
  # --config.teacher.model.hidden="(1024,1024,512)"; perfect --config.teacher.model.name=oracle.
  config.teacher = _role(model_config("mlp_teacher", hidden=(256, 256, 128)),
                         num_epochs=2 if smoke else 5 if quick else 8,
                         batch_size=16 if smoke else 32, kd="none")
  config.teacher.learning_rate = 3e-3 if quick else 1e-3
  config.teacher.num_teachers = 1  # > 1: an ensemble of seeds, trained as one vmapped sweep
  config.teacher.restore_from = ""  # a run dir whose teacher (same data/config) to reuse
  # Run dirs over the same data whose finished teachers (any architecture) join this run's
  # as extra ensemble members: e.g. an mlp_teacher run plus a dcn_v2 run, distilled at once.
  config.teacher.ensemble_with = ()
  # teacher.model.name="logged": no teacher is trained; the teacher is the production
  # ranker's scores logged with the data (source.teacher_score_columns for a table,
  # source.teacher_score_file for LETOR files; docs/guides/logged_teacher.md).
  config.teacher.score_kind = "logit"  # logit | probability (clipped) | rank (1 = best)
  config.teacher.missing = "mask"      # a missing score: "mask" it out of distillation, or
                                       # "refuse" the data

  config.student = _role(model_config("mlp_student", hidden=(64, 32)),
                         num_epochs=4 if smoke else 5 if quick else 20,
                         batch_size=16 if smoke else 32, kd="hinton_listwise")

  # One axis per traced hyperparameter of the loss registry; an empty axis means the
  # registry default. Combined as a product (or "zip"); one compiled program runs them all.
  config.sweep = {name: () for name in HPARAMS}
  config.sweep.update(
      temperature=(1.0, 4.0) if quick else (1.0, 2.0, 5.0),
      alpha=(0.5, 1.0) if quick else (0.5, 0.9, 1.0),
      learning_rate=(3e-3,),
  )
  config.sweep.mode = "product"
  # Structural axes: each combination is its own compiled program, e.g.
  # "student.loss.kd=hinton_listwise|logit_mse; student.model.hidden=(32,)|(64, 32)".
  config.sweep.programs = ""
  config.sweep.gt_only_baseline = True  # add a student trained on exposed labels alone (α=0)
  # Student replicates: every point (the gt-only student too) once per seed, each with its
  # own initialisation and data order, in the same compiled program. () = one replicate
  # seeded by config.seed. The world (data, teacher) is config.seed: separate runs.
  config.sweep.seeds = ()
  # 0: vmap all points at once (accelerators). g > 0: vmap g points at a time and scan
  # over the groups in the same program (bounds memory; on a 2-core CPU g=4 was 1.6×
  # faster than one vmap at 16 points, benchmarks/results/sweep_throughput_cpu.md). g is rounded up to a multiple of the devices
  # on the sweep axis, and the points are padded to a multiple of it. -1 (auto): 0 on
  # GPU/TPU, 4 on CPU (prerank_jax/train/sweep.py::resolve_group_size).
  config.sweep.group_size = -1
  config.eval = dict(k=10, keep_ratios=(0.1, 0.25, 0.5, 0.75), relevant_grade=2.0,
                     monitor_keep_ratio=0.25,
                     # NDCG of a list without a relevant candidate: "exclude" it from the
                     # mean (counted in results.md), or score it "zero" or "one".
                     ndcg_empty="exclude",
                     # NDCG gain: "exp2" (2^y − 1) or "linear" (y, as trec_eval ndcg_cut).
                     gain="exp2")
  config.lock()
  return config
