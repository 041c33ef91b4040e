#!/usr/bin/env bash
# Submit a multi-node GPU ra_jax run to SLURM: one process per GPU (default)
# or one per node. jax.distributed.initialize() reads the coordinator, the
# process count and the process id from SLURM's environment (ra_jax
# initialises it because of --config.distributed=on).
#
#   launch/slurm.sh --nodes 2 --gpus_per_node 8 --partition gpu --time 12:00:00 \
#       -- --config configs/tiny_imagenet.py --workdir /shared/runs/tin
#
# Resources are requested per node (--ntasks-per-node=G --gpus-per-node=G):
# every task sees all G GPUs of its node and JAX's SLURM detection gives task
# i local device SLURM_LOCALID. (--gpus-per-task=1 without a task count is
# rejected by recent Slurm, and where accepted leaves each task one visible
# GPU while JAX asks for device SLURM_LOCALID: "invalid device ordinal".)
# With one process per node, JAX_LOCAL_DEVICE_IDS lists all G GPUs, since the
# detection would otherwise use device 0 only. Each task gets --cpus-per-task
# cores (also passed to srun through SRUN_CPUS_PER_TASK, which srun no longer
# inherits from sbatch since Slurm 22.05) so the input pipeline is not
# confined to one core.
#
# The nodes need a GPU build of jax (pip install -c constraints.txt -e
# ".[gcs]" "jax[cuda12]", or "jax[cuda13]"; .[gcs] for gs:// work dirs); a
# plain install runs on the CPU. The work dir must be on a file system all
# nodes share, or gs://. srun runs with --gpu-bind=none: every task sees
# every GPU of its node and picks its own (above), whatever the site's
# default binding. On scancel or the time limit SLURM sends SIGTERM: every
# task saves a checkpoint at one agreed step and exits (then SIGKILL after
# KillWait, 30 s by default). Resubmitting with the same --workdir resumes.
# --dry-run prints the batch script.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/slurm.sh [options] -- <arguments of python -m ra_jax.train>

options:
  --nodes N            nodes (default 1)
  --gpus_per_node G    GPUs per node (default 8)
  --per gpu|node       one process per GPU (default) or per node
  --cpus_per_gpu C     CPU cores per GPU for the input pipeline (default 8)
  --partition P        SLURM partition
  --account A          SLURM account
  --time T             time limit, e.g. 12:00:00 (default 24:00:00)
  --job_name NAME      (default ra_jax)
  --python PATH        interpreter on the nodes (default python3)
  --log_dir DIR        where SLURM writes the job's output (default ./slurm_logs)
  --dry-run            print the batch script and the sbatch command; submit nothing
  -h, --help           this text
USAGE
}

die() { echo "launch/slurm.sh: $*" >&2; exit 2; }

nodes=1 gpus=8 per=gpu cpus_per_gpu=8 partition="" account="" time_limit=24:00:00
job_name=ra_jax python=python3 log_dir=./slurm_logs dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
    --gpus_per_node) gpus="${2:?--gpus_per_node needs a value}"; shift 2 ;;
    --per) per="${2:?--per needs a value}"; shift 2 ;;
    --cpus_per_gpu) cpus_per_gpu="${2:?--cpus_per_gpu needs a value}"; shift 2 ;;
    --partition) partition="${2:?--partition needs a value}"; shift 2 ;;
    --account) account="${2:?--account needs a value}"; shift 2 ;;
    --time) time_limit="${2:?--time needs a value}"; shift 2 ;;
    --job_name) job_name="${2:?--job_name needs a value}"; shift 2 ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    --log_dir) log_dir="${2:?--log_dir needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option '$1' (training arguments go after --)" ;;
  esac
done
for value in "$nodes" "$gpus" "$cpus_per_gpu"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "'$value' is not a positive integer"
done
[[ "$per" == gpu || "$per" == node ]] || die "--per must be gpu or node, got '$per'"
[[ $# -gt 0 ]] || die "no training arguments after --; e.g. -- --config configs/cifar100.py --workdir /shared/run"
if [[ $dry_run -eq 0 ]] && ! command -v sbatch >/dev/null; then
  die "sbatch is not on PATH (run this on a SLURM login node); --dry-run shows the job"
fi

if [[ "$per" == gpu ]]; then
  tasks_per_node=$gpus
  cpus_per_task=$cpus_per_gpu
  devices=""
else
  tasks_per_node=1
  cpus_per_task=$((cpus_per_gpu * gpus))
  # JAX's SLURM detection would give the one process device 0 only.
  devices="export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus - 1)))"
fi
args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done

script="#!/usr/bin/env bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
#SBATCH --gpus-per-node=$gpus
#SBATCH --cpus-per-task=$cpus_per_task
#SBATCH --time=$time_limit
#SBATCH --output=$log_dir/%x-%j.out"
[[ -n "$partition" ]] && script+=$'\n'"#SBATCH --partition=$partition"
[[ -n "$account" ]] && script+=$'\n'"#SBATCH --account=$account"
script+="
set -euo pipefail
cd $(printf '%q' "$PWD")
# srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05).
export SRUN_CPUS_PER_TASK=\$SLURM_CPUS_PER_TASK"
[[ -n "$devices" ]] && script+=$'\n'"$devices"
script+="
# Every task runs the same command; jax.distributed finds its place in the
# job from SLURM_* variables. Only process 0 writes logs and results.
srun --kill-on-bad-exit=1 --gpu-bind=none $(printf '%q' "$python") -m ra_jax.train${args} --config.distributed=on"

if [[ $dry_run -eq 1 ]]; then
  echo "# sbatch <<'EOF'"
  echo "$script"
  echo "# EOF"
  exit 0
fi
mkdir -p "$log_dir"
echo "$script" | sbatch
