"""launch/ scripts: help, dry runs, early errors, shellcheck. The local
multi-process launcher's real run is in tests/training/test_processes.py."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/local.sh", "launch/tpu_pod.sh", "launch/slurm.sh"]
TRAIN = ["--config", "configs/cifar100.py:model=vit_s4,loss=ce", "--workdir",
         "/shared/runs/c100"]


def _run(*args, path=None):
  env = dict(os.environ)
  if path is not None:
    env["PATH"] = path
  return subprocess.run(["/bin/bash", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_and_shellcheck_passes(script):
  out = _run(script, "--help")
  assert out.returncode == 0 and out.stdout.startswith("usage:")
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (.ci/run installs it)")
  check = subprocess.run(["shellcheck", script], cwd=ROOT,
                         capture_output=True, text=True)
  assert check.returncode == 0, check.stdout


def test_local_dry_run_prints_one_command_per_process():
  out = _run("launch/local.sh", "--num_processes", "3",
             "--devices_per_process", "2", "--port", "9999", "--dry-run",
             "--", *TRAIN)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert (f"JAX_COORDINATOR_ADDRESS=localhost:9999 JAX_NUM_PROCESSES=3"
            f" JAX_PROCESS_ID={i}") in line
    assert "xla_force_host_platform_device_count=2" in line
    assert "-m ra_jax.train --config" in line
  assert lines[2].endswith("> /shared/runs/c100/logs/process_2.log 2>&1")


def test_tpu_dry_runs_print_the_gcloud_commands():
  common = ["--name", "ra", "--zone", "us-central2-b", "--dry-run"]
  expect = {
      "create": ("gcloud compute tpus tpu-vm create ra --zone us-central2-b"
                 " --accelerator-type v4-32 --version tpu-ubuntu2204-base"),
      "setup": ("gcloud compute tpus tpu-vm ssh ra --zone us-central2-b"
                " --worker=all --command 'set -e; rm -rf ~/ra_jax; git clone"
                " -q https://example.org/ra_jax.git ~/ra_jax"),
      "stage-data": "--worker=all --command 'mkdir -p /tmp/tfds && gcloud"
                    " storage cp -r gs://bucket/tfds/* /tmp/tfds/'",
      "train": ("--worker=all --command 'cd ~/ra_jax && nohup"
                " ~/venv/bin/python -m ra_jax.train --config"
                " configs/cifar100.py:model=vit_s4\\,loss=ce --workdir"
                " /shared/runs/c100 --config.distributed=on"
                " --config.dataset.data_dir=/tmp/tfds > /tmp/ra_jax_train.log"
                " 2>&1 < /dev/null &'"),
      "logs": "--worker=0 --command 'tail -n +1 -f /tmp/ra_jax_train.log'",
      "delete": "gcloud compute tpus tpu-vm delete ra --zone us-central2-b"
                " --quiet",
  }
  for subcommand, want in expect.items():
    out = _run("launch/tpu_pod.sh", subcommand, *common, "--type", "v4-32",
               "--runtime", "tpu-ubuntu2204-base", "--repo",
               "https://example.org/ra_jax.git", "--bucket", "bucket",
               "--data", "gs://bucket/tfds", "--", *TRAIN)
    assert out.returncode == 0, out.stderr
    assert want in out.stdout, (subcommand, out.stdout)
  setup = _run("launch/tpu_pod.sh", "setup", *common, "--repo", "r",
               "--bucket", "b").stdout
  assert "gcsfuse --implicit-dirs b /mnt/bucket" in setup


def test_slurm_dry_run_prints_the_batch_script():
  out = _run("launch/slurm.sh", "--nodes", "2", "--gpus_per_node", "4",
             "--partition", "gpu", "--dry-run", "--", *TRAIN)
  assert out.returncode == 0, out.stderr
  for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
               "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu",
               "srun --kill-on-bad-exit=1 python3 -m ra_jax.train --config"
               " configs/cifar100.py:model=vit_s4\\,loss=ce --workdir"
               " /shared/runs/c100 --config.distributed=on"]:
    assert line in out.stdout.splitlines(), line
  per_node = _run("launch/slurm.sh", "--per", "node", "--dry-run", "--",
                  *TRAIN).stdout
  assert "#SBATCH --ntasks-per-node=1" in per_node
  assert "#SBATCH --gpus-per-node=8" in per_node


@pytest.mark.parametrize("args,message", [
    (["launch/tpu_pod.sh", "create", "--name", "a", "--zone", "z"],
     "create needs --type"),
    (["launch/tpu_pod.sh", "create", "--zone", "z", "--type", "v4-8",
      "--runtime", "r"], "--name is required"),
    (["launch/tpu_pod.sh", "reboot", "--name", "a"], "unknown subcommand"),
    (["launch/tpu_pod.sh", "delete", "--name", "a", "--zone", "z"],
     "gcloud is not installed"),
    (["launch/slurm.sh", "--", *TRAIN], "sbatch is not on PATH"),
    (["launch/slurm.sh", "--nodes", "0", "--dry-run", "--", *TRAIN],
     "'0' is not a positive integer"),
    (["launch/local.sh", "--dry-run"], "no training arguments after --"),
    (["launch/local.sh", "--dry-run", "--", "--config", "x"],
     "pass --workdir to the training command"),
    (["launch/local.sh", "--config", "x"], "unknown option '--config'"),
])
def test_bad_arguments_and_missing_tools_fail_early(args, message, tmp_path):
  for tool in ("cat", "python3", "mkdir"):  # a PATH without gcloud or sbatch
    os.symlink(shutil.which(tool), tmp_path / tool)
  out = _run(*args, path=str(tmp_path))
  assert out.returncode == 2
  assert message in out.stderr
