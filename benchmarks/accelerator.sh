#!/usr/bin/env bash
# Sweep throughput on one GPU: prerank-jax against the two PyTorch baselines on the same chip.
#
# Usage (from the repository root, on a machine with an NVIDIA GPU and pip access):
#
#   bash benchmarks/accelerator.sh            # venv in .venv-gpu, results in benchmarks/results/
#
# It makes a fresh virtual environment, installs this package pinned by constraints.txt,
# with its `cuda12` extra (jax[cuda12] at constraints.txt's jax version), replaces torch with
# the CUDA wheel of constraints.txt's torch version, checks that both see the GPU, then runs
# benchmarks/sweep_throughput.py at both shapes (quickstart and realistic) for
# K in {1, 16, 64, 256}, with JAX and both PyTorch baselines (eager K runs, torch.func
# ensembling) on the same chip. It writes benchmarks/results/sweep_throughput_gpu.{md,json}
# and a copy of nvidia-smi's report next to them.
#
# Environment knobs:
#   PYTHON           the interpreter for the venv (default python3)
#   VENV             where the venv goes (default .venv-gpu)
#   TORCH_INDEX_URL  PyTorch's wheel index for the CUDA build
#                    (default https://download.pytorch.org/whl/cu128)
#   KS               sweep sizes (default "1 16 64 256")
#   EPOCHS           timed epochs per measurement, median reported (default 3)
#
# Expected runtime on one H100/H200: about 10-15 minutes, mostly installs and compilation.
# Not yet run: no GPU was available to this project when it was written (see README).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
KS=${KS:-"1 16 64 256"}
EPOCHS=${EPOCHS:-3}
OUT=benchmarks/results

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "benchmarks/accelerator.sh: no NVIDIA GPU visible (nvidia-smi -L failed); this script" \
       "measures the GPU case only. On a CPU run: python benchmarks/sweep_throughput.py" >&2
  exit 2
fi

pin() {  # the version constraints.txt pins for package $1
  local v
  v=$(grep -i "^$1==" constraints.txt | head -1 | cut -d= -f3)
  if [[ -z "$v" ]]; then
    echo "benchmarks/accelerator.sh: constraints.txt pins no version of $1" >&2
    exit 2
  fi
  echo "$v"
}
JAX_VERSION=$(pin jax)
TORCH_VERSION=$(pin torch)
if ! grep -q "\"jax\[cuda12\]==${JAX_VERSION}\"" pyproject.toml; then
  echo "benchmarks/accelerator.sh: pyproject.toml's cuda12 extra does not pin" \
       "jax[cuda12]==${JAX_VERSION} (constraints.txt's jax); make them agree" >&2
  exit 2
fi

"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The package, its pinned dependencies and the GPU extra: `pip install -e ".[cuda12]"` is
# the one documented line for GPU users (jax[cuda12] at constraints.txt's jax version).
# torch is replaced by its CUDA wheel below.
"$PY" -m pip install -q -c constraints.txt -e ".[cuda12]"
"$PY" -m pip install -q "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"

"$PY" - <<'EOF'
import jax, torch
assert jax.default_backend() == "gpu", f"jax sees {jax.devices()}, not a GPU"
assert torch.cuda.is_available(), "torch does not see the GPU"
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      torch.cuda.get_device_name(0))
EOF

mkdir -p "$OUT"
nvidia-smi > "$OUT/sweep_throughput_gpu_nvidia_smi.txt"
# shellcheck disable=SC2086
"$PY" benchmarks/sweep_throughput.py --shapes quickstart realistic --ks $KS \
  --epochs "$EPOCHS" --group-sizes 16 64 --torch-threads 1 --out "$OUT"
echo "wrote $OUT/sweep_throughput_gpu.md and .json"
