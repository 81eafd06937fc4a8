"""E3 — Ba & Caruana (2014) logit matching against Hinton et al. (2015) at high T.

Hinton et al. (2015, §2.1) show that for zero-mean logits the gradient of T²·KL(softmax(v/T)
‖ softmax(z/T)) with respect to the student's logits z tends to (z − v)/N as T grows: the
gradient of Ba & Caruana's logit regression ½‖z − v‖²/N. So at high T the two students
should coincide. Claims re-run (quickstart world, pure distillation α = 1 so only the
distillation term differs):

- logit matching beats the gt-only student (Ba & Caruana 2014);
- Hinton at the highest T is equivalent to logit matching (|Δ recall@25%| ≤ 0.005, the
  primary metric's margin; NDCG@10 is printed beside it);
- a numerical check of the gradients themselves (no training): the cosine between
  ∇_z hinton_listwise_kd(T) and ∇_z logit_mse over random lists, as T grows, printed in
  the summary and drawn in ``e3_gradient_cosine.png``.

  python experiments/e3_ba_caruana.py [--smoke] [--from-results]

Full runtime: measured, see the README (results kept in experiments/results/).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import Claim, Experiment, Method

TEMPERATURES = (1.0, 4.0, 16.0, 64.0)
CHECK_TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
HINTON, MSE = "hinton_listwise", "logit_mse"
EQUIVALENCE = harness.MARGINS[harness.PRIMARY]  # |Δ| below which two students are equivalent


def methods(smoke: bool) -> list[Method]:
  temps = (1.0, 16.0) if smoke else TEMPERATURES
  return [Method(HINTON, {"student.loss.kd": HINTON, "sweep.temperature": temps,
                          "sweep.alpha": (1.0,)}),
          Method(MSE, {"student.loss.kd": MSE, "sweep.temperature": (1.0,),
                       "sweep.alpha": (1.0,)})]


def claims(high_t: float) -> list[Claim]:
  return [
      Claim("logit matching (α=1) beats the gt-only student", MSE, harness.PRIMARY, +1,
            source="Ba & Caruana 2014"),
      Claim(f"Hinton at T={high_t:g} ≈ logit matching (|Δ| ≤ {EQUIVALENCE})", HINTON,
            harness.PRIMARY, 0, where={"temperature": high_t}, against=MSE, margin=EQUIVALENCE,
            source="Hinton et al. 2015 §2.1"),
  ]


@functools.cache
def gradient_cosines(temperatures=CHECK_TEMPERATURES, *, lists: int = 256, size: int = 20,
                     seed: int = 0) -> pd.DataFrame:
  """Mean cosine, over random lists, between the two losses' gradients w.r.t. the student.

  Student and teacher logits are N(0, 1) per candidate. ``raw``: the gradients as they are;
  ``zero-mean``: the logit-MSE gradient projected onto zero-sum vectors (the listwise
  softmax is shift-invariant, so its gradient always sums to 0 over a list; Hinton's
  derivation assumes zero-mean logits, which this projection enforces).
  """
  import jax
  import jax.numpy as jnp
  from prerank_jax.losses.distill import hinton_listwise_kd, logit_mse

  k1, k2 = jax.random.split(jax.random.key(seed))
  z = jax.random.normal(k1, (lists, size))
  v = jax.random.normal(k2, (lists, size))
  where = jnp.ones((lists, size), bool)
  g_mse = jax.grad(lambda s: logit_mse(s, v, where=where, reduce_fn=jnp.sum))(z)
  g_mse0 = g_mse - g_mse.mean(-1, keepdims=True)
  cos = lambda a, b: jnp.mean(jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1)
                                                   * jnp.linalg.norm(b, axis=-1)))

  @jax.jit
  @jax.vmap  # T is traced: one compilation for every temperature
  def check(t):
    g = jax.grad(lambda s: hinton_listwise_kd(s, v, where=where, temperature=t,
                                              reduce_fn=jnp.sum))(z)
    ratio = jnp.mean(jnp.linalg.norm(g, axis=-1) / jnp.linalg.norm(g_mse0, axis=-1))
    return cos(g, g_mse), cos(g, g_mse0), ratio

  raw, zero_mean, ratio = jax.device_get(check(jnp.asarray(temperatures, jnp.float32)))
  return pd.DataFrame({"T": list(temperatures), "cosine (raw)": raw.astype(float),
                       "cosine (zero-mean)": zero_mean.astype(float),
                       "‖∇ hinton‖ / ‖∇ mse‖": ratio.astype(float)})


def notes(frame: pd.DataFrame) -> str:
  check = gradient_cosines()
  lines = ["## Gradient check (no training)", "",
           "Cosine between ∇_z of `hinton_listwise_kd` (with T²) and of `logit_mse`, 256 "
           "random lists of 20, logits N(0, 1); it should tend to 1 as T grows. The "
           "listwise gradient sums to 0 over a list, so the zero-mean column (the MSE "
           "gradient with its list mean removed, Hinton's zero-mean-logit assumption) is "
           "the one that must reach 1; the norm ratio should level off at a constant "
           "(a rescaling, which Adam removes):", "",
           "| T | cosine (raw) | cosine (zero-mean) | ‖∇ hinton‖ / ‖∇ mse (zero-mean)‖ |",
           "|---|---|---|---|"]
  lines += [f"| {r['T']:g} | {r['cosine (raw)']:.4f} | {r['cosine (zero-mean)']:.4f} | "
            f"{r['‖∇ hinton‖ / ‖∇ mse‖']:.4f} |" for _, r in check.iterrows()]
  return "\n".join(lines)


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  plt = harness.pyplot()
  check = gradient_cosines()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  ax1.semilogx(check["T"], check["cosine (raw)"], "o-", label="raw")
  ax1.semilogx(check["T"], check["cosine (zero-mean)"], "s-", label="zero-mean")
  ax1.set_xlabel("T")
  ax1.set_ylabel("cos(∇ Hinton T²·KL, ∇ logit MSE)")
  ax1.set_ylim(0, 1.02)
  ax1.legend()
  ax1.set_title("gradients (no training)", fontsize=10)
  students = table[table["role"] == "student"]
  hinton = students[students["method"] == HINTON].sort_values("temperature")
  ax2.errorbar(hinton["temperature"], hinton["ndcg@10"], yerr=np.nan_to_num(hinton["ndcg@10_ci"]),
               fmt="o-", capsize=3, label=HINTON)
  mse = students[students["method"] == MSE]
  for _, r in mse.iterrows():
    ax2.axhline(r["ndcg@10"], color="tab:orange", label=f"{MSE} (no T)")
    if np.isfinite(r["ndcg@10_ci"]):
      ax2.axhspan(r["ndcg@10"] - r["ndcg@10_ci"], r["ndcg@10"] + r["ndcg@10_ci"],
                  color="tab:orange", alpha=0.2)
  ax2.set_xscale("log")
  ax2.set_xlabel("T")
  ax2.set_ylabel("test NDCG@10 (95% CI over worlds)")
  ax2.legend()
  ax2.set_title("students (α = 1)", fontsize=10)
  return [harness.save_figure(fig, out_dir / "e3_gradient_cosine.png")]


def experiment(high_t: float = TEMPERATURES[-1]) -> Experiment:
  return Experiment(name="e3_ba_caruana",
                    title="E3 — Ba & Caruana logit matching vs Hinton KD at high T",
                    methods=methods, claims=claims(high_t), figures=figures, notes=notes)


def main(argv=None) -> Path:
  import sys
  argv = sys.argv[1:] if argv is None else list(argv)
  return harness.main(experiment(16.0 if "--smoke" in argv else TEMPERATURES[-1]), argv)


if __name__ == "__main__":
  main()
