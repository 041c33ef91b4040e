#!/usr/bin/env bash
# Run one ra_jax job as N processes on this machine, each with D fake CPU
# devices, coordinated through jax.distributed on localhost (gloo
# collectives). The same code path as a multi-host pod, on one box.
#
#   launch/local.sh --num_processes 2 --devices_per_process 2 -- \
#       --config configs/digits.py --workdir /tmp/digits_2proc
#
# Everything after `--` goes to `python -m ra_jax.train` (or --module).
# Process 0 prints to this terminal; the others log to
# <workdir>/logs/process_<i>.log (or --log_dir). If any process fails, the
# rest are stopped and the script exits with that process's status.
# SIGTERM or SIGINT to this script goes on to every process as SIGTERM: each
# saves a checkpoint at one agreed step and exits with status 143 (jax's
# preemption service), and this script waits for them and exits 143 too.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/local.sh [options] -- <arguments of python -m ra_jax.train>

options:
  --num_processes N        processes to start (default 2)
  --devices_per_process D  fake CPU devices in each (default 1)
  --port P                 coordinator port on localhost (default 12421)
  --module M               python module to run (default ra_jax.train)
  --python PATH            interpreter (default: $PYTHON or python3)
  --log_dir DIR            where processes 1..N-1 log (default <workdir>/logs)
  --dry-run                print the commands and exit
  -h, --help               this text
USAGE
}

die() { echo "launch/local.sh: $*" >&2; exit 2; }

num_processes=2
devices=1
port=12421
module=ra_jax.train
python="${PYTHON:-python3}"
log_dir=""
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --num_processes) num_processes="${2:?--num_processes needs a value}"; shift 2 ;;
    --devices_per_process) devices="${2:?--devices_per_process needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --module) module="${2:?--module needs a value}"; shift 2 ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    --log_dir) log_dir="${2:?--log_dir needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option '$1' (put the training arguments after --)" ;;
  esac
done
for value in "$num_processes" "$devices" "$port"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "'$value' is not a positive integer"
done
[[ $# -gt 0 ]] || die "no training arguments after --; e.g. -- --config configs/digits.py --workdir /tmp/run"
command -v "$python" >/dev/null || die "python interpreter '$python' not found (set --python or \$PYTHON)"

if [[ -z "$log_dir" ]]; then
  workdir=""
  args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --workdir=*) workdir="${args[i]#--workdir=}" ;;
      --workdir) workdir="${args[i + 1]:-}" ;;
    esac
  done
  [[ -n "$workdir" ]] || die "pass --workdir to the training command or --log_dir here"
  log_dir="$workdir/logs"
fi

command_for() {  # the exact command of process $1; the rest are its args
  local p="$1"
  shift
  printf 'env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=%s' "$devices"
  printf ' JAX_COORDINATOR_ADDRESS=localhost:%s JAX_NUM_PROCESSES=%s JAX_PROCESS_ID=%s' \
    "$port" "$num_processes" "$p"
  printf ' %q -m %q' "$python" "$module"
  printf ' %q' "$@"
}

if [[ $dry_run -eq 1 ]]; then
  for ((p = 0; p < num_processes; p++)); do
    line="$(command_for "$p" "$@")"
    [[ $p -gt 0 ]] && line+=" > $log_dir/process_$p.log 2>&1"
    echo "$line"
  done
  exit 0
fi

mkdir -p "$log_dir"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
# A stop request: every process saves and exits on its own; wait for them.
stopping=0
# shellcheck disable=SC2317  # called by the trap below
forward_stop() { stopping=1; cleanup; }
trap forward_stop INT TERM
for ((p = 0; p < num_processes; p++)); do
  run=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
       "JAX_COORDINATOR_ADDRESS=localhost:$port" "JAX_NUM_PROCESSES=$num_processes"
       "JAX_PROCESS_ID=$p" "$python" -m "$module" "$@")
  if [[ $p -eq 0 ]]; then
    "${run[@]}" &
  else
    "${run[@]}" >"$log_dir/process_$p.log" 2>&1 &
  fi
  pids+=($!)
done

# Wait for whichever process ends first; a failure stops the rest, since
# the survivors would block in their next collective.
declare -A index_of
for ((p = 0; p < num_processes; p++)); do index_of[${pids[p]}]=$p; done
status=0
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  finished=""
  code=0
  wait -n -p finished "${running[@]}" || code=$?
  # a signal interrupted the wait (its trap has run): wait again
  [[ -n "${finished:-}" ]] || continue
  still=()
  for pid in "${running[@]}"; do [[ $pid == "$finished" ]] || still+=("$pid"); done
  running=("${still[@]}")
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
    p=${index_of[$finished]}
    # 143: stopped by SIGTERM after saving; the others stop at the same
    # step on their own (a stop request reaches every process)
    if [[ $code -ne 143 && $stopping -eq 0 ]]; then
      echo "launch/local.sh: process $p exited with status $code; stopping the others" >&2
      if [[ $p -gt 0 ]]; then tail -n 20 "$log_dir/process_$p.log" >&2; fi
      cleanup
    fi
  fi
done
trap - EXIT
exit "$status"
