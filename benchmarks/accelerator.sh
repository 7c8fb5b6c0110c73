#!/usr/bin/env bash
# A ready accelerator check, a few minutes on one GPU or TPU host: installs JAX for the chip
# found (jax[cuda12] under nvidia-smi, jax[tpu] with /dev/accel*) and this package, then
# times the sampler and the update on random weights of a Qwen2.5-0.5B-like shape in
# bfloat16, and prints decode tokens/s against the memory-bandwidth roofline and update MFU
# against the chip's peak (datasheet table in benchmarks/common.py; override with flags).
# Not run by CI.
#
#   bash benchmarks/accelerator.sh [--no-install] [--shape NAME] [--peak-tflops X] [--hbm-gbps Y]
#   bash benchmarks/accelerator.sh --dry-run   # any machine (CPU): tiny shape, no install,
#                                              # placeholder peaks; checks the script only
#
# Environment: PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
usage() { sed -n '9,12p' "$0" >&2; exit 2; }

shape=qwen2-0.5b dtype=bfloat16 install=1 dry=0 peak=() hbm=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry=1 install=0 shape=tiny dtype=float32; shift ;;
    --no-install) install=0; shift ;;
    --shape) [[ $# -ge 2 ]] || usage; shape=$2; shift 2 ;;
    --peak-tflops) [[ $# -ge 2 ]] || usage; peak=(--peak-tflops "$2"); shift 2 ;;
    --hbm-gbps) [[ $# -ge 2 ]] || usage; hbm=(--hbm-gbps "$2"); shift 2 ;;
    *) usage ;;
  esac
done

if [[ $install == 1 ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    accel=cuda12
  elif compgen -G "/dev/accel*" >/dev/null || compgen -G "/dev/vfio/[0-9]*" >/dev/null; then
    accel=tpu
  else
    echo "no GPU (nvidia-smi) or TPU (/dev/accel*) found; on a CPU use --dry-run" >&2
    exit 2
  fi
  "$python" -m pip install -q -e .
  jax_version=$("$python" -c 'import jax; print(jax.__version__)')
  "$python" -m pip install -q "jax[$accel]==$jax_version"  # plugins matching the installed jax
fi

if [[ $dry == 1 ]]; then
  # sizes that compile in seconds; the peaks are placeholders so every printed column runs
  [[ ${#peak[@]} -gt 0 ]] || peak=(--peak-tflops 1)
  [[ ${#hbm[@]} -gt 0 ]] || hbm=(--hbm-gbps 100)
  decode=(--batch-sizes 2 --prompt-length 8 --new-tokens 8 --repeats 1)
  update=(--groups 2 --group-size 2 --prompt-length 16 --completion-length 8 --steps 1)
  echo "dry run: tiny shape, placeholder peaks; the figures say nothing about this machine"
else
  decode=(--batch-sizes 1 64 --prompt-length 128 --new-tokens 128 --repeats 2)
  update=(--groups 4 --group-size 4 --prompt-length 256 --completion-length 256 --steps 3)
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
echo "== sampler: decode tokens/s against the memory-bandwidth roofline"
"$python" benchmarks/rollout.py --model-shape "$shape" --dtype "$dtype" "${decode[@]}" "${hbm[@]}"
echo "== update: model FLOPs utilisation against the chip's peak"
"$python" benchmarks/train_step.py --model-shape "$shape" --dtype "$dtype" "${update[@]}" \
  "${peak[@]}"
echo "== done in $((SECONDS - start)) s (after installs)"
