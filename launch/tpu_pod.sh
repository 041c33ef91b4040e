#!/usr/bin/env bash
# Train ra_jax on a Cloud TPU VM slice (single- or multi-host), one step of
# the life cycle per subcommand:
#
#   launch/tpu_pod.sh create  --name ra --zone us-central2-b --type v4-32 \
#       --runtime tpu-ubuntu2204-base
#   launch/tpu_pod.sh setup   --name ra --zone us-central2-b \
#       --repo https://github.com/you/ra_jax.git --bucket my-bucket
#   launch/tpu_pod.sh stage-data --name ra --zone us-central2-b \
#       --data gs://my-bucket/tfds
#   launch/tpu_pod.sh train   --name ra --zone us-central2-b \
#       --data gs://my-bucket/tfds -- \
#       --config configs/tiny_imagenet.py --workdir /mnt/bucket/runs/tin
#   launch/tpu_pod.sh logs    --name ra --zone us-central2-b
#   launch/tpu_pod.sh delete  --name ra --zone us-central2-b
#
# `train` runs the same command on every worker at once (--worker=all) with
# --config.distributed=on (and the staged TFDS data when given --data); the work dir must be
# visible to all workers (the bucket mounted by `setup` with gcsfuse), since
# orbax writes one checkpoint from all hosts. Rerunning `train` with the same
# --workdir resumes. --dry-run prints the gcloud commands instead.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/tpu_pod.sh SUBCOMMAND --name NAME --zone ZONE [options] [-- train args]

subcommands:
  create       create the TPU VM slice            (needs --type, --runtime)
  setup        install ra_jax on every worker     (needs --repo; --bucket mounts
               gs://BUCKET at /mnt/bucket with gcsfuse for shared work dirs)
  stage-data   copy a TFDS data dir to every worker's /tmp/tfds (needs --data)
  train        run python -m ra_jax.train on all workers; args after --
               (with --data as well, dataset.data_dir is the staged copy)
  logs         stream worker 0's training log
  delete       delete the slice

options:
  --name NAME       TPU VM name
  --zone ZONE       e.g. us-central2-b
  --project ID      gcloud project (default: gcloud's configured one)
  --type TYPE       accelerator type, e.g. v4-8, v4-32, v5litepod-16
  --runtime VER     TPU VM runtime version, e.g. tpu-ubuntu2204-base
  --repo URL        git URL of the project to install
  --ref REF         git branch, tag or commit (default main)
  --bucket NAME     GCS bucket to mount at /mnt/bucket (setup)
  --data GS_PATH    TFDS data dir on GCS, e.g. gs://bucket/tfds (stage-data)
  --spot            create a spot (preemptible) slice
  --dry-run         print the commands instead of running them
  -h, --help        this text
USAGE
}

die() { echo "launch/tpu_pod.sh: $*" >&2; exit 2; }

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
case "$1" in
  -h|--help) usage; exit 0 ;;
  create|setup|stage-data|train|logs|delete) subcommand="$1"; shift ;;
  *) usage >&2; die "unknown subcommand '$1'" ;;
esac

name="" zone="" project="" type="" runtime="" repo="" ref="main" bucket=""
data="" spot=0 dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --type) type="${2:?--type needs a value}"; shift 2 ;;
    --runtime) runtime="${2:?--runtime needs a value}"; shift 2 ;;
    --repo) repo="${2:?--repo needs a value}"; shift 2 ;;
    --ref) ref="${2:?--ref needs a value}"; shift 2 ;;
    --bucket) bucket="${2:?--bucket needs a value}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --spot) spot=1; shift ;;
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
    [[ -n "$type" ]] || die "create needs --type (e.g. v4-32)"
    [[ -n "$runtime" ]] || die "create needs --runtime (e.g. tpu-ubuntu2204-base)" ;;
  setup) [[ -n "$repo" ]] || die "setup needs --repo (a git URL)" ;;
  stage-data) [[ "$data" == gs://* ]] || die "stage-data needs --data gs://..." ;;
  train) [[ $# -gt 0 ]] || die "train needs the training arguments after --" ;;
esac
if [[ $dry_run -eq 0 ]] && ! command -v gcloud >/dev/null; then
  die "gcloud is not installed or not on PATH (https://cloud.google.com/sdk); --dry-run shows the commands"
fi

tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")
log=/tmp/ra_jax_train.log

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

case "$subcommand" in
  create)
    extra=()
    [[ $spot -eq 1 ]] && extra+=(--spot)
    run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$type" \
      --version "$runtime" "${extra[@]}" ;;
  setup)
    script="set -e; rm -rf ~/ra_jax; git clone -q $(printf '%q' "$repo") ~/ra_jax"
    script+=" && cd ~/ra_jax && git checkout -q $(printf '%q' "$ref")"
    script+=" && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e . 'jax[tpu]'"
    if [[ -n "$bucket" ]]; then
      script+=" && sudo mkdir -p /mnt/bucket && sudo chown \$USER /mnt/bucket"
      script+=" && (command -v gcsfuse || (sudo apt-get update -q && sudo apt-get install -y -q gcsfuse))"
      script+=" && gcsfuse --implicit-dirs $(printf '%q' "$bucket") /mnt/bucket"
    fi
    on_all_workers "$script" ;;
  stage-data)
    on_all_workers "mkdir -p /tmp/tfds && gcloud storage cp -r $(printf '%q' "${data%/}")/* /tmp/tfds/" ;;
  train)
    args=""
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    args+=" --config.distributed=on"
    [[ -n "$data" ]] && args+=" --config.dataset.data_dir=/tmp/tfds"
    on_all_workers "cd ~/ra_jax && nohup ~/venv/bin/python -m ra_jax.train${args} > $log 2>&1 < /dev/null &" ;;
  logs)
    run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command "tail -n +1 -f $log" ;;
  delete)
    run "${tpu[@]}" delete "$name" "${where[@]}" --quiet ;;
esac
