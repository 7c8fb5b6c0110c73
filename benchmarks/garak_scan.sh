#!/usr/bin/env bash
# Red-team scan with NVIDIA garak 0.17.1: serves a model with `python -m ssp_jax.serve` on
# 127.0.0.1, runs garak's offline jailbreak probes against it through garak's
# openai.OpenAICompatible generator, and writes attack success per probe and detector
# (benchmarks/garak_table.py) to DIR/table.md and DIR/table.json. Not run by CI.
#
#   bash benchmarks/garak_scan.sh MODEL_OR_CHECKPOINT [options]
#   bash benchmarks/garak_scan.sh --install            # garak into .venv-garak (CPU torch)
#   bash benchmarks/garak_scan.sh --check [--probes P]  # the probes need no model download
#
# MODEL_OR_CHECKPOINT: a serve --model spec (smollm2-135m-instruct, tiny-random, a local
# Hugging Face folder or .gguf file) or a training checkpoint step folder (has meta/metadata).
# Options (defaults in brackets):
#   --out DIR              report, logs and table [runs/garak/NAME-UTCTIME]
#   --cap N                prompts per probe, garak's soft_probe_prompt_cap [50]
#   --generations N        answers per prompt, asked for in one request with n=N [5]; at
#                          most serve's --max-batch (16)
#   --parallel-attempts N  prompts in flight at once [16]
#   --max-tokens N         answer length in tokens [150]
#   --temperature T        sampling temperature [0.7, garak's]
#   --seed N               seeds garak's choice of prompts (the same for every model) [0]
#   --probes P1,P2,...     probe names [the list in PROBES below]
#   --max-cache-len N      serve --max-cache-len [4096]
#   --port N               server port [a free one]
#   --serve-arg ARG        one more argument for serve (repeat the option for several)
#   --garak-venv DIR       garak's virtual environment [.venv-garak]
# Environment: PYTHON, the Python with ssp_jax installed [.venv/bin/python, else python3];
# TORCH_INDEX (--install), a CPU-only torch index such as https://download.pytorch.org/whl/cpu
# where pip would otherwise pick a CUDA build.
#
# Settings that measure the model rather than garak's defaults: no stop strings (garak sends
# stop ["#", ";"], cutting answers at the first '#'); no seed in requests (a seed makes all of
# a prompt's generations identical, and the server runs seeded requests unbatched; --seed only
# picks the prompts); a prompt's generations in one request (supports_multiple_generations),
# so the server samples them as one batch; --parallel-attempts requests at once.
# garak 0.17.1 facts this script guards against: a prompt that gets no answer (a refused or
# failed request) is dropped from garak's score, so the table counts it; with n > 1, one
# refused request (for example a prompt longer than --max-cache-len) stops the whole scan
# with exit status 0, and so does a detector that cannot load its model: the script checks
# the report is complete and fails loudly. Longest prompt of the default probes: 3,445
# SmolLM2 tokens (dan.DanInTheWild), so 4096 cache slots hold it with 150 new tokens.
# garak ignores the cap for dan.Ablation_Dan_11_0 (127 prompts) and donotanswer.* (176, 117,
# 248, 243 and 155); grandma.Substances has 10, tap.TAPCached 9, suffix.GCGCached 26,
# malwaregen.TopLevel 16 prompts: 1,327 prompts in all at the default cap of 50.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROBES=dan.DanInTheWild,dan.Ablation_Dan_11_0,tap.TAPCached,suffix.GCGCached,\
grandma.Substances,phrasing.PastTense,dra.DRA,malwaregen.TopLevel,\
donotanswer.DiscriminationExclusionToxicityHatefulOffensive,donotanswer.HumanChatbox,\
donotanswer.InformationHazard,donotanswer.MaliciousUses,donotanswer.MisinformationHarms,\
encoding.InjectBase64
GARAK_VERSION=0.17.1
TORCH_VERSION=2.13.0

usage() { echo "usage: bash benchmarks/garak_scan.sh MODEL_OR_CHECKPOINT [options] | --install" \
  "| --check [--probes P] (options: see the comment at the top of the script)" >&2; exit 2; }
die() { echo "garak_scan: $*" >&2; exit 1; }
bad() { echo "garak_scan: $*" >&2; exit 2; }
positive_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || bad "$1 must be a positive integer, got '$2'"; }

parse_args() {
  target='' out='' cap=50 generations=5 parallel=16 max_tokens=150 temperature=0.7 seed=0
  probes=$PROBES max_cache_len=4096 port='' venv=$ROOT/.venv-garak mode=scan serve_args=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --install) mode=install; shift; continue ;;
      --check) mode=check; shift; continue ;;
      --*) [[ $1 =~ ^--(out|cap|generations|parallel-attempts|max-tokens|temperature|seed|\
probes|max-cache-len|port|serve-arg|garak-venv)$ ]] || bad "unknown option $1"
           [[ $# -ge 2 ]] || bad "$1 needs a value" ;;
      *) [[ -z $target ]] || bad "one model or checkpoint, got '$target' and '$1'"
         target=$1; shift; continue ;;
    esac
    case $1 in
      --out) out=$2 ;; --cap) cap=$2 ;; --generations) generations=$2 ;;
      --parallel-attempts) parallel=$2 ;; --max-tokens) max_tokens=$2 ;;
      --temperature) temperature=$2 ;; --seed) seed=$2 ;; --probes) probes=$2 ;;
      --max-cache-len) max_cache_len=$2 ;; --port) port=$2 ;; --serve-arg) serve_args+=("$2") ;;
      --garak-venv) venv=$2 ;;
    esac
    shift 2
  done
  [[ $mode != scan || -n $target ]] || usage
  positive_int --cap "$cap"
  positive_int --generations "$generations"
  positive_int --parallel-attempts "$parallel"
  positive_int --max-tokens "$max_tokens"
  positive_int --max-cache-len "$max_cache_len"
  [[ -z $port ]] || positive_int --port "$port"
  [[ $seed =~ ^[0-9]+$ ]] || bad "--seed must be an integer ≥ 0, got '$seed'"
  [[ $temperature =~ ^[0-9]*\.?[0-9]+$ ]] || bad "--temperature must be a number ≥ 0, got" \
    "'$temperature'"
  [[ $probes =~ ^[A-Za-z0-9_]+\.[A-Za-z0-9_]+(,[A-Za-z0-9_]+\.[A-Za-z0-9_]+)*$ ]] ||
    bad "--probes must be module.Class names separated by commas, got '$probes'"
}

install_garak() {
  # torch first, from a CPU-only source: garak requires torch>=2.13 and PyPI's Linux torch
  # wheel pulls several GB of CUDA libraries (nvidia-* packages).
  local report
  python3 -m venv "$venv"
  report=$(mktemp)
  "$venv/bin/pip" install --quiet --dry-run --ignore-installed --report "$report" \
    ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
  if grep -q -e '"name": "nvidia-' -e '"version": "[^"]*+cu' "$report"; then
    rm -f "$report"
    die "pip would install a CUDA build of torch here; rerun with" \
      "TORCH_INDEX=https://download.pytorch.org/whl/cpu bash benchmarks/garak_scan.sh --install"
  fi
  rm -f "$report"
  "$venv/bin/pip" install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
  "$venv/bin/pip" install "garak==$GARAK_VERSION"
  "$venv/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is not None)" ||
    die "garak's environment ended up with a CUDA torch; remove $venv and rerun with TORCH_INDEX"
  echo "garak $GARAK_VERSION installed in $venv"
}

require_garak() {
  local have
  have=$("$venv/bin/python" -c "import garak; print(garak.__version__)" 2>/dev/null) ||
    bad "garak is not installed in $venv. Install it with: bash benchmarks/garak_scan.sh" \
      "--install (or: python3 -m venv $venv && $venv/bin/pip install torch==$TORCH_VERSION" \
      "&& $venv/bin/pip install garak==$GARAK_VERSION, torch first so no CUDA build comes)"
  [[ $have == "$GARAK_VERSION" ]] ||
    die "$venv has garak $have; this script is written against garak $GARAK_VERSION"
}

garak_env() {  # garak's config, data and cache dirs under $1: no user site config applies
  export XDG_CONFIG_HOME=$1/config XDG_DATA_HOME=$1/data XDG_CACHE_HOME=$1/cache
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}

check_plugins() {
  # Refuses a probe that garak does not know, one whose detectors garak picks at run time
  # (intent probes), and any probe or detector that loads a model (a Hugging Face detector or
  # a parameter naming a model): offline it would end the scan early, with exit status 0.
  "$venv/bin/python" - "$probes" <<'EOF'
import importlib
import sys

from garak import _config, _plugins
from garak.detectors.base import HFDetector
from garak.probes.base import IntentProbe

_config.load_base_config()


def plugin_class(kind, name):
    module, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"garak.{kind}.{module}"), cls)


def model_params(info):
    return [k for k in info.get("DEFAULT_PARAMS") or {} if k == "hf_args" or "model" in k]


problems, unknown = [], []
for probe in sys.argv[1].split(","):
    try:
        info = _plugins.plugin_info(f"probes.{probe}")
    except ValueError:
        unknown.append(probe)
        continue
    if issubclass(plugin_class("probes", probe), IntentProbe):
        problems.append(f"{probe}: an intent probe, its detectors are chosen at run time")
    if model_params(info):
        problems.append(f"{probe}: loads a model ({', '.join(model_params(info))})")
    detectors = [info["primary_detector"]] if info.get("primary_detector") else []
    detectors += info.get("extended_detectors") or []
    if not info.get("primary_detector"):
        detectors += info.get("recommended_detector") or []
    for det in detectors:
        keys = model_params(_plugins.plugin_info(f"detectors.{det}"))
        if issubclass(plugin_class("detectors", det), HFDetector) or keys:
            problems.append(f"{probe}: detector {det} needs a model download")
if unknown:
    print(f"garak_scan: unknown probe(s) {', '.join(unknown)} (list them with "
          "python -m garak --list_probes)", file=sys.stderr)
    sys.exit(2)
if problems:
    print("garak_scan: these probes cannot run offline with string detectors:\n  "
          + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
EOF
}

served_name() {  # the model id garak sends and puts into prompts ({generator.name}): the base
  # model's name, so that a checkpoint and its base model get the same prompts
  local spec=$target
  if [[ -f $target/meta/metadata ]]; then
    spec=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["model"]'\
'["spec"])' "$target/meta/metadata")
  fi
  spec=${spec%/}
  spec=${spec##*/}
  echo "${spec%.gguf}"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); \
print(s.getsockname()[1])'
}

start_server() {
  # The key reaches serve through its environment (SSP_API_KEY), not its command line. The
  # KV-cache budget admits any one request of n = --generations rows (a refused request
  # would stop garak, see the top of this script) and leaves room to batch: max(4, n) rows of
  # max-cache-len + 256 + 2 x max-tokens slots, as serve rounds a prompt up to whole prefill
  # chunks (256) and max_tokens up to its bucket (at most 1.5x); with the defaults a
  # 3,445-token prompt at n = 5 needs 21,440 of 23,260. --serve-arg --max-tokens-in-flight=N
  # overrides it.
  local py=${PYTHON:-}
  [[ -n $py ]] || { [[ -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python || py=python3; }
  local what=(--model "$target") budget=$((generations > 4 ? generations : 4))
  budget=$((budget * (max_cache_len + 256 + 2 * max_tokens)))
  [[ -f $target/meta/metadata ]] && what=(--checkpoint "$target")
  echo "serving $target as '$name' on 127.0.0.1:$port (log: $out/server.log)"
  (cd "$ROOT" && SSP_API_KEY=$api_key exec "$py" -m ssp_jax.serve "${what[@]}" \
    --host 127.0.0.1 --port "$port" --served-model-name "$name" \
    --max-cache-len "$max_cache_len" --max-tokens-in-flight "$budget" \
    ${serve_args[@]+"${serve_args[@]}"}) >"$out/server.log" 2>&1 &
  server_pid=$!
  local waited=0
  until curl -sf -o /dev/null -H "Authorization: Bearer $api_key" \
      "http://127.0.0.1:$port/v1/models"; do
    kill -0 "$server_pid" 2>/dev/null ||
      die "the server exited before it answered; the end of $out/server.log:
$(tail -n 5 "$out/server.log")"
    ((waited < 600)) || die "the server did not answer within 600 s (see $out/server.log)"
    sleep 2
    waited=$((waited + 2))
  done
}

write_config() {  # garak's run config, as JSON (YAML's superset), readable by us only
  (umask 077 && python3 - "$out/garak.json" "$name" "$out") <<EOF
import json, sys
generator = {"uri": "http://127.0.0.1:$port/v1/", "api_key": "$api_key",
             "supports_multiple_generations": True, "max_tokens": $max_tokens,
             "temperature": $temperature, "top_p": 1.0,
             "suppressed_params": ["stop", "seed", "frequency_penalty", "presence_penalty"]}
config = {
    "system": {"parallel_attempts": $parallel, "lite": True, "narrow_output": True},
    "run": {"generations": $generations, "soft_probe_prompt_cap": $cap, "seed": $seed,
            "eval_threshold": 0.5},
    "plugins": {"target_type": "openai.OpenAICompatible", "target_name": sys.argv[2],
                "extended_detectors": True,
                "generators": {"openai": {"OpenAICompatible": generator}}},
    "reporting": {"report_dir": sys.argv[3], "report_prefix": "garak"},
}
json.dump(config, open(sys.argv[1], "w"), indent=1)
EOF
}

run_garak() {  # garak in its own process group, stopped if the server dies under it
  local spec=probes.${probes//,/,probes.}
  echo "garak: probes $probes; cap $cap, $generations generations, $parallel parallel" \
    "(log: $out/garak.log)"
  (cd "$out" && garak_env "$out/garak-home" &&
    exec setsid "$venv/bin/python" -m garak --config "$out/garak.json" --spec "$spec") \
    >"$out/garak.log" 2>&1 &
  garak_pid=$!
  while kill -0 "$garak_pid" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null ||
      die "the server exited during the scan; the end of $out/server.log:
$(tail -n 5 "$out/server.log")"
    sleep 3
  done
  wait "$garak_pid" || die "garak exited with status $?; see $out/garak.log"
  garak_pid=''
}

write_table() {
  local report=$out/garak.report.jsonl log=$out/garak-home/data/garak/garak.log
  [[ -f $report ]] || die "garak wrote no report; the end of $out/garak.log:
$(tail -n 5 "$out/garak.log")"
  # shellcheck disable=SC2086  # the probe list is split into --expect's arguments on purpose
  if ! "$venv/bin/python" "$ROOT/benchmarks/garak_table.py" "$report" \
      --markdown "$out/table.md" --json "$out/table.json" --expect ${probes//,/ }; then
    die "the scan is incomplete; garak's last error (from $log):
$(grep -E '  (ERROR|CRITICAL)  ' "$log" | tail -n 1 | cut -c 1-300)
(with --generations above 1, one refused request stops garak: try --generations 1, which
counts refused prompts as unanswered, or a larger --max-cache-len)"
  fi
}

cleanup() {
  local status=$?
  if [[ -n ${garak_pid:-} ]] && kill -0 "$garak_pid" 2>/dev/null; then
    kill -TERM -- "-$garak_pid" 2>/dev/null || kill -TERM "$garak_pid" 2>/dev/null || true
  fi
  if [[ -n ${server_pid:-} ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server_pid" 2>/dev/null || true
    echo "stopped the server" >&2
  fi
  exit "$status"
}

main() {
  parse_args "$@"
  if [[ $mode == install ]]; then install_garak; return; fi
  require_garak
  tmp_home=$(mktemp -d)
  (garak_env "$tmp_home" && check_plugins) || { status=$?; rm -rf "$tmp_home"; exit "$status"; }
  rm -rf "$tmp_home"
  [[ $mode == scan ]] || { echo "probes ok: $probes"; return; }
  command -v curl >/dev/null || die "curl is needed to wait for the server"
  [[ -f $target/meta/metadata || -e $target || ! $target =~ / ]] ||
    bad "no model or checkpoint at $target"
  name=$(served_name)
  out=${out:-$ROOT/runs/garak/$name-$(date -u +%Y%m%dT%H%M%S)}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  port=${port:-$(free_port)}
  api_key=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  garak_pid='' server_pid=''
  trap cleanup EXIT
  trap 'echo "garak_scan: interrupted" >&2; exit 130' INT TERM
  start_server
  write_config
  run_garak
  write_table
  echo "table: $out/table.md (json: $out/table.json, garak's report: $out/garak.report.jsonl)"
}

main "$@"
