#!/usr/bin/env bash
# Train ra_jax on a Cloud TPU VM slice (single- or multi-host), one step of
# the life cycle per subcommand:
#
#   launch/tpu_pod.sh create  --name ra --zone us-central2-b --type v4-32 [--queued --spot]
#   launch/tpu_pod.sh wait    --name ra --zone us-central2-b    # a queued slice: until ACTIVE
#   launch/tpu_pod.sh setup   --name ra --zone us-central2-b \
#       --repo https://github.com/you/ra_jax.git
#   launch/tpu_pod.sh stage-data --name ra --zone us-central2-b \
#       --data gs://my-bucket/tfds
#   launch/tpu_pod.sh check   --name ra --zone us-central2-b --workdir gs://my-bucket/runs/tin
#   launch/tpu_pod.sh train   --name ra --zone us-central2-b \
#       --data gs://my-bucket/tfds -- \
#       --config configs/tiny_imagenet.py --workdir gs://my-bucket/runs/tin
#   launch/tpu_pod.sh logs    --name ra --zone us-central2-b
#   launch/tpu_pod.sh stop    --name ra --zone us-central2-b
#   launch/tpu_pod.sh delete  --name ra --zone us-central2-b [--queued]
#
# `create` picks the TPU runtime that matches the accelerator type (and
# refuses a --runtime of another generation); --queued requests the slice as
# a queued resource, the way Cloud TPU recommends getting slices, and waits
# until it is ACTIVE (failing if it turns FAILED or SUSPENDED; --no-wait
# returns at once, and `wait` waits later). `setup` installs Python 3.11
# with uv (TPU VM images ship Python 3.10, which jax 0.10 does not support)
# and ra_jax with the pinned versions and jax[tpu]; it can be run again (a
# retry, another --ref): the checkout and the venv are made anew. `check`
# proves, on worker 0 with its service account, that a gs:// work dir
# allows what orbax and ra_jax do there (ra_jax.training.storage_check).
# `train` runs that check for a gs:// --workdir, then makes sure no worker
# runs training (a TPU is held by one process; --restart stops them
# first), then starts the same command on every worker at once
# (--worker=all) with --config.distributed=on: all workers or none. The work
# dir should be gs://...: orbax and ra_jax write to Cloud Storage directly.
# On SIGTERM (a preemption notice, `stop`) every worker saves a checkpoint
# at one agreed step; rerunning `train` with the same --workdir resumes;
# after a preemption: delete, create, setup, stage-data, train (the staged
# data went with the old VMs). --dry-run prints the commands instead of
# running them.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/tpu_pod.sh SUBCOMMAND --name NAME --zone ZONE [options] [-- train args]

subcommands:
  create       create the slice (needs --type; --queued: as a queued resource,
               then wait until it is ACTIVE unless --no-wait)
  wait         wait until the queued resource is ACTIVE (--wait_minutes)
  setup        install Python 3.11 (uv), ra_jax and jax[tpu] on every worker
               (needs --repo; --mount BUCKET also mounts it with gcsfuse);
               safe to run again
  check        on worker 0: can the service account write, read, list,
               read bucket metadata and delete in --workdir gs://...?
  stage-data   copy a TFDS data dir to every worker's /tmp/tfds (needs --data)
  train        run python -m ra_jax.train on all workers; args after --
               (with --data as well, dataset.data_dir is the staged copy)
  logs         stream worker 0's training log
  stop         end the training process on every worker (TERM: it saves a
               checkpoint and exits; KILL after 60 s only)
  delete       delete the slice (--queued: the queued resource and its slice)

options:
  --name NAME       TPU VM name (and queued resource id)
  --zone ZONE       e.g. us-central2-b
  --project ID      gcloud project (default: gcloud's configured one)
  --type TYPE       accelerator type: v4-8, v4-32, v5litepod-16, v5p-8, v6e-8, ...
  --runtime VER     TPU runtime (default: the one for --type's generation)
  --queued          create/delete through gcloud compute tpus queued-resources
  --no-wait         (create --queued) return at once; `wait` waits later
  --wait_minutes M  how long create --queued / wait wait (default 1440)
  --spot            create a spot (preemptible) slice
  --repo URL        git URL of the project to install
  --ref REF         git branch, tag or commit (default main)
  --mount BUCKET    (setup) also mount gs://BUCKET at /mnt/bucket with gcsfuse;
                    optional: gs:// work dirs need no mount
  --data GS_PATH    TFDS data dir on GCS, e.g. gs://bucket/tfds
  --workdir GS_PATH (check) the work dir to check
  --restart         (train) stop a running training process first
  --dry-run         print the commands instead of running them
  -h, --help        this text
USAGE
}

die() { echo "launch/tpu_pod.sh: $*" >&2; exit 2; }

# The runtime for each TPU generation (Cloud TPU "TPU software versions").
runtime_for() {
  case "$1" in
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
case "$1" in
  -h|--help) usage; exit 0 ;;
  create|wait|setup|check|stage-data|train|logs|stop|delete) subcommand="$1"; shift ;;
  *) usage >&2; die "unknown subcommand '$1'" ;;
esac

name="" zone="" project="" type="" runtime="" repo="" ref="main" mount=""
data="" workdir="" spot=0 queued=0 restart=0 dry_run=0 wait=1 wait_minutes=1440
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --type) type="${2:?--type needs a value}"; shift 2 ;;
    --runtime) runtime="${2:?--runtime needs a value}"; shift 2 ;;
    --repo) repo="${2:?--repo needs a value}"; shift 2 ;;
    --ref) ref="${2:?--ref needs a value}"; shift 2 ;;
    --mount) mount="${2:?--mount needs a bucket name}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --workdir) workdir="${2:?--workdir needs a value}"; shift 2 ;;
    --no-wait) wait=0; shift ;;
    --wait_minutes) wait_minutes="${2:?--wait_minutes needs a value}"; shift 2 ;;
    --spot) spot=1; shift ;;
    --queued) queued=1; shift ;;
    --restart) restart=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (training arguments go after --)" ;;
  esac
done

[[ -n "$name" ]] || die "--name is required"
[[ -n "$zone" ]] || die "--zone is required"
case "$subcommand" in
  create)
    [[ -n "$type" ]] || die "create needs --type (e.g. v4-32, v5litepod-16)"
    expected=$(runtime_for "$type") ||
      die "unknown accelerator type '$type' (v2-, v3-, v4-, v5litepod-, v5p-, v6e-...)"
    if [[ -z "$runtime" ]]; then
      runtime=$expected
    elif [[ "$runtime" != "$expected" ]]; then
      die "--runtime $runtime does not match --type $type; its runtime is $expected"
    fi ;;
  setup) [[ -n "$repo" ]] || die "setup needs --repo (a git URL)" ;;
  stage-data) [[ "$data" == gs://* ]] || die "stage-data needs --data gs://..." ;;
  check) [[ "$workdir" == gs://* ]] || die "check needs --workdir gs://..." ;;
  train) [[ $# -gt 0 ]] || die "train needs the training arguments after --" ;;
esac
[[ "$wait_minutes" =~ ^[0-9]+$ ]] || die "--wait_minutes '$wait_minutes' is not a number of minutes"
if [[ $dry_run -eq 0 ]] && ! command -v gcloud >/dev/null; then
  die "gcloud is not installed or not on PATH (https://cloud.google.com/sdk); --dry-run shows the commands"
fi

tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")
log=/tmp/ra_jax_train.log
# The training interpreter's command line, anchored so that it never matches
# the shell that runs a check (whose command line quotes this pattern).
training='^[^ ]*/venv/bin/python -m ra_jax[.]train'

quote() {  # one shell word, single-quoted only when it needs to be
  if [[ "$1" =~ ^[A-Za-z0-9_./=:,@+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {  # prints or runs one command
  if [[ $dry_run -eq 1 ]]; then
    local words=()
    for word in "$@"; do words+=("$(quote "$word")"); done
    echo "${words[*]}"
  else
    "$@"
  fi
}

on_all_workers() { run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$1"; }
on_worker_0() { run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command "$1"; }

# Polls the queued resource until it is ACTIVE; FAILED or SUSPENDED (or
# the time running out) is an error naming its state.
poll_seconds=${RA_JAX_POLL_SECONDS:-30}
wait_active() {
  local state="" deadline=$((SECONDS + 60 * wait_minutes))
  if [[ $dry_run -eq 1 ]]; then
    run gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)'
    return 0
  fi
  while true; do
    state=$(gcloud compute tpus queued-resources describe "$name" "${where[@]}" \
      --format='value(state.state)') || die "cannot describe queued resource $name"
    case "$state" in
      ACTIVE) echo "launch/tpu_pod.sh: queued resource $name is ACTIVE"; return 0 ;;
      FAILED|SUSPENDED) die "queued resource $name is $state; delete it (delete --queued) and create again" ;;
    esac
    if [[ $SECONDS -ge $deadline ]]; then
      die "queued resource $name is still $state after $wait_minutes min; wait more with: launch/tpu_pod.sh wait --name $name --zone $zone"
    fi
    echo "launch/tpu_pod.sh: queued resource $name is $state; checking again in ${poll_seconds}s" >&2
    sleep "$poll_seconds"
  done
}

# Refuses (status 3) where a training process holds the TPU.
busy_check="if pgrep -f '$training' >/dev/null; then echo \"\$(hostname): ra_jax.train is already running and holds the TPU; launch/tpu_pod.sh stop ends it (or train --restart)\" >&2; exit 3; fi"
storage_check() {  # $1: a gs:// work dir
  on_worker_0 "cd ~/ra_jax && ~/venv/bin/python -m ra_jax.training.storage_check $(printf '%q' "$1")"
}

stop_script="pkill -TERM -f '$training' || true"
stop_script+="; for _ in \$(seq 30); do pgrep -f '$training' >/dev/null || break; sleep 2; done"
stop_script+="; pkill -KILL -f '$training' || true"

case "$subcommand" in
  create)
    extra=()
    [[ $spot -eq 1 ]] && extra+=(--spot)
    if [[ $queued -eq 1 ]]; then
      run gcloud compute tpus queued-resources create "$name" --node-id "$name" \
        "${where[@]}" --accelerator-type "$type" --runtime-version "$runtime" \
        "${extra[@]}"
      if [[ $wait -eq 1 ]]; then
        wait_active
      else
        echo "launch/tpu_pod.sh: queued; launch/tpu_pod.sh wait --name $name --zone $zone waits until it is ACTIVE (setup before that fails with NOT_FOUND)" >&2
      fi
    else
      run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$type" \
        --version "$runtime" "${extra[@]}"
    fi ;;
  wait)
    wait_active ;;
  check)
    storage_check "$workdir" ;;
  setup)
    # Again after a failure or for another --ref: refused while training
    # runs, then the checkout and the venv are made anew.
    script="$busy_check; set -e; rm -rf ~/ra_jax; git clone -q $(printf '%q' "$repo") ~/ra_jax"
    script+="; cd ~/ra_jax; git checkout -q $(printf '%q' "$ref")"
    # TPU VM images ship Python 3.10 without venv; uv brings its own 3.11.
    script+="; export PATH=~/.local/bin:\$PATH"
    script+="; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh"
    script+="; rm -rf ~/venv; uv venv -q --python 3.11 ~/venv"
    script+="; ~/venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'"
    script+=" || { echo \"\$(hostname): ~/venv has no Python >= 3.11\" >&2; exit 1; }"
    script+="; uv pip install -q --python ~/venv/bin/python -c constraints.txt -e '.[gcs]' 'jax[tpu]'"
    if [[ -n "$mount" ]]; then
      # gcsfuse from its apt repository, as its install guide does.
      script+="; if ! command -v gcsfuse >/dev/null; then echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list"
      script+="; curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
      script+="; sudo apt-get update -q; sudo apt-get install -y -q gcsfuse; fi"
      script+="; sudo mkdir -p /mnt/bucket; sudo chown \$USER /mnt/bucket"
      script+="; gcsfuse --implicit-dirs $(printf '%q' "$mount") /mnt/bucket"
    fi
    on_all_workers "$script" ;;
  stage-data)
    on_all_workers "mkdir -p /tmp/tfds && gcloud storage cp -r $(printf '%q' "${data%/}")/* /tmp/tfds/" ;;
  train)
    args="" train_workdir=""
    for ((i = 1; i <= $#; i++)); do
      a="${!i}"
      args+=" $(printf '%q' "$a")"
      case "$a" in
        --workdir=*) train_workdir="${a#--workdir=}" ;;
        --workdir) j=$((i + 1)); train_workdir="${!j:-}" ;;
      esac
    done
    args+=" --config.distributed=on"
    [[ -n "$data" ]] && args+=" --config.dataset.data_dir=/tmp/tfds"
    # All workers or none: the preflight and the check for running training
    # come first, on every worker, before any starts.
    if [[ "$train_workdir" == gs://* ]]; then
      storage_check "$train_workdir" ||
        die "the service account cannot use $train_workdir (above); nothing started"
    fi
    if [[ $restart -eq 1 ]]; then
      on_all_workers "$stop_script"
    else
      on_all_workers "$busy_check" ||
        die "training runs on a worker (above); nothing started"
    fi
    # Only the interpreter goes to the background: a backgrounded `cd && ...`
    # list would be a subshell holding the ssh session open until it ends.
    on_all_workers "cd ~/ra_jax || exit 1; nohup ~/venv/bin/python -m ra_jax.train${args} > $log 2>&1 < /dev/null &" ;;
  logs)
    run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command "tail -n +1 -f $log" ;;
  stop)
    on_all_workers "$stop_script" ;;
  delete)
    if [[ $queued -eq 1 ]]; then
      run gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
    else
      run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
    fi ;;
esac
