#!/usr/bin/env bash
# Submit a multi-node GPU ra_jax run to SLURM. One process per GPU (default)
# or per node; jax.distributed.initialize() reads the coordinator, process
# count and process id from SLURM's environment (ra_jax initialises it
# because --config.distributed=on).
#
#   launch/slurm.sh --nodes 2 --gpus_per_node 8 --partition gpu --time 12:00:00 \
#       -- --config configs/tiny_imagenet.py --workdir /shared/runs/tin
#
# The work dir must be on a file system all nodes share (orbax writes one
# checkpoint from all processes). Resubmitting with the same --workdir
# resumes. --dry-run prints the batch script and the sbatch command.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/slurm.sh [options] -- <arguments of python -m ra_jax.train>

options:
  --nodes N            nodes (default 1)
  --gpus_per_node G    GPUs per node (default 8)
  --per gpu|node       one process per GPU (default) or per node
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

nodes=1 gpus=8 per=gpu partition="" account="" time_limit=24:00:00
job_name=ra_jax python=python3 log_dir=./slurm_logs dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
    --gpus_per_node) gpus="${2:?--gpus_per_node needs a value}"; shift 2 ;;
    --per) per="${2:?--per needs a value}"; shift 2 ;;
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
for value in "$nodes" "$gpus"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "'$value' is not a positive integer"
done
[[ "$per" == gpu || "$per" == node ]] || die "--per must be gpu or node, got '$per'"
[[ $# -gt 0 ]] || die "no training arguments after --; e.g. -- --config configs/cifar100.py --workdir /shared/run"
if [[ $dry_run -eq 0 ]] && ! command -v sbatch >/dev/null; then
  die "sbatch is not on PATH (run this on a SLURM login node); --dry-run shows the job"
fi

if [[ "$per" == gpu ]]; then
  tasks_per_node=$gpus
  gpu_binding="#SBATCH --gpus-per-task=1"
else
  tasks_per_node=1
  gpu_binding="#SBATCH --gpus-per-node=$gpus"
fi
args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done

script="#!/usr/bin/env bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
$gpu_binding
#SBATCH --time=$time_limit
#SBATCH --output=$log_dir/%x-%j.out"
[[ -n "$partition" ]] && script+=$'\n'"#SBATCH --partition=$partition"
[[ -n "$account" ]] && script+=$'\n'"#SBATCH --account=$account"
script+="
set -euo pipefail
cd $(printf '%q' "$PWD")
# Every task runs the same command; jax.distributed finds its place in the
# job from SLURM_* variables. Only process 0 writes logs and results.
srun --kill-on-bad-exit=1 $(printf '%q' "$python") -m ra_jax.train${args} --config.distributed=on"

if [[ $dry_run -eq 1 ]]; then
  echo "# sbatch <<'EOF'"
  echo "$script"
  echo "# EOF"
  exit 0
fi
mkdir -p "$log_dir"
echo "$script" | sbatch
