#!/usr/bin/env bash
# Runs N processes of `python -m ssp_jax.main` on this machine as one JAX job (coordinator and
# bind address on 127.0.0.1), for testing multi-host code paths on a CPU.
#
#   launch/local_multiprocess.sh 2 -- --config configs/tiny.py --workdir runs/mp
#
# Environment: PORT (coordinator port; default: a free one), DEVICES_PER_PROCESS (fake CPU
# devices per process, default 1), LOG_DIR (per-process logs, default: a temp folder),
# PYTHON (the interpreter, default python3).
set -euo pipefail

usage() { echo "usage: $0 NUM_PROCESSES -- <arguments for python -m ssp_jax.main>" >&2; exit 2; }
[[ $# -ge 2 && "$1" =~ ^[1-9][0-9]*$ && "$2" == "--" ]] || usage
num=$1
shift 2
python=${PYTHON:-python3}
port=${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$log_dir"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < num; i++)); do
  SSP_COORDINATOR="127.0.0.1:$port" SSP_NUM_PROCESSES="$num" SSP_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu \
    XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}" \
    "$python" -m ssp_jax.main "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
echo "started $num processes on 127.0.0.1:$port; logs in $log_dir"

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $log_dir/process_$i.log" >&2
    status=1
    cleanup
  fi
done
exit $status
