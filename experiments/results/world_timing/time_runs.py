"""(Measurement kept with its output, experiments/results/world_timing/; docs/research/methods.md,
"Cheaper worlds".)  Run from the repository root:
  .venv/bin/python experiments/results/world_timing/time_runs.py OUT.jsonl e4_ranking_distillation 0 1 0 1 2

Times runner calls of one experiment's methods world after world with a FRESH
persistent compilation cache. Per run: wall seconds and the seconds JAX reports (via
jax.monitoring) for tracing, lowering, backend compilation and cache retrieval.
argv: out.json experiment smoke(0/1) n_methods world...; appends one JSON line per run."""
import collections, importlib, json, os, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "experiments")); sys.path.insert(0, str(ROOT))
import jax
import harness
out_path, name, smoke, n_methods = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
worlds = [int(w) for w in sys.argv[5:]]
module = importlib.import_module(name)
exp = module.experiment(smoke) if hasattr(module, "experiment") else module.EXPERIMENT
harness.use_compilation_cache(Path(tempfile.mkdtemp(prefix="h4-xla-")))
events = collections.defaultdict(float)
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: events.__setitem__(event, events[event] + duration))
methods = list(exp.methods(smoke))[:n_methods]
with open(out_path, "a") as f:
  for world in worlds:
    for m in methods:
      events.clear()
      t0 = time.perf_counter()
      harness.run_methods("timing", [m], [world], out=Path(tempfile.mkdtemp()), smoke=smoke,
                          replicates=exp.replicates[:2], log=lambda s: None)
      rec = {"experiment": name, "smoke": smoke, "world": world, "method": m.name,
             "wall_s": round(time.perf_counter() - t0, 2),
             "events": {k: round(v, 2) for k, v in events.items() if v >= 0.01},
             "load": os.getloadavg()}
      f.write(json.dumps(rec) + "\n"); f.flush()
      print(json.dumps(rec), flush=True)
