#!/usr/bin/env bash
# Runs the same training command on every worker of a TPU VM slice; JAX finds the other
# workers itself (jax.distributed.initialize() auto-detects TPU pods).
#
#   launch/tpu_pod.sh my-v4-32 us-central2-b [my-project] [--setup] -- \
#       --config configs/qwen2_5_7b.py --workdir gs://bucket/runs/qwen
#
# --setup first copies this checkout to every worker (~/ssp_jax) and installs it there (with
# gcsfs, for gs:// workdirs). All workers write one run folder; SIGTERM on any worker (a
# maintenance event) stops every worker at the same step with a checkpoint.
set -euo pipefail

usage() { echo "usage: $0 TPU_NAME ZONE [PROJECT] [--setup] -- <arguments for ssp_jax.main>" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
tpu=$1 zone=$2
shift 2
project_flag=()
if [[ "$1" != "--" && "$1" != "--setup" ]]; then project_flag=(--project "$1"); shift; fi
setup=0
if [[ "${1:-}" == "--setup" ]]; then setup=1; shift; fi
[[ "${1:-}" == "--" ]] || usage
shift

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${project_flag[@]}" --worker=all \
    --command "$1"
}

if [[ $setup == 1 ]]; then
  gcloud compute tpus tpu-vm scp --recurse "$(cd "$(dirname "$0")/.." && pwd)" \
    "$tpu":~/ssp_jax --zone "$zone" "${project_flag[@]}" --worker=all
  ssh_all "cd ~/ssp_jax && python3 -m pip install -q -e '.[gcs]' 'jax[tpu]' \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi
args=$(printf '%q ' "$@")
ssh_all "cd ~/ssp_jax && python3 -m ssp_jax.main $args"
