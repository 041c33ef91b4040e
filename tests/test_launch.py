"""launch/ scripts: help, dry runs, early errors, shellcheck. The local
multi-process launcher's real run is in tests/training/test_processes.py."""

import os
import shlex
import shutil
import subprocess
import sys
import time

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


def _tpu(subcommand, *args):
  return _run("launch/tpu_pod.sh", subcommand, "--name", "ra", "--zone",
              "us-central2-b", "--dry-run", *args)


def test_tpu_dry_runs_print_the_gcloud_commands():
  common = ["--type", "v4-32", "--repo", "https://example.org/ra_jax.git",
            "--data", "gs://bucket/tfds", "--", *TRAIN[:-1],
            "gs://bucket/runs/c100"]
  expect = {
      "create": ("gcloud compute tpus tpu-vm create ra --zone us-central2-b"
                 " --accelerator-type v4-32 --version tpu-ubuntu2204-base"),
      "setup": ("holds the TPU; launch/tpu_pod.sh stop ends it (or train"
                " --restart)\" >&2; exit 3; fi; set -e; rm -rf ~/ra_jax; git"
                " clone -q https://example.org/ra_jax.git ~/ra_jax"),
      "stage-data": "--worker=all --command 'mkdir -p /tmp/tfds && gcloud"
                    " storage cp -r gs://bucket/tfds/* /tmp/tfds/'",
      "train": ("nohup ~/venv/bin/python -m ra_jax.train --config"
                " configs/cifar100.py:model=vit_s4\\,loss=ce --workdir"
                " gs://bucket/runs/c100 --config.distributed=on"
                " --config.dataset.data_dir=/tmp/tfds > /tmp/ra_jax_train.log"
                " 2>&1 < /dev/null &'"),
      "logs": "--worker=0 --command 'tail -n +1 -f /tmp/ra_jax_train.log'",
      "stop": "--worker=all --command 'pkill -TERM -f",
      "delete": "gcloud compute tpus tpu-vm delete ra --zone us-central2-b"
                " --quiet",
  }
  for subcommand, want in expect.items():
    out = _tpu(subcommand, *common)
    assert out.returncode == 0, out.stderr
    assert want in out.stdout, (subcommand, out.stdout)


def test_tpu_setup_installs_python_3_11_with_the_pinned_versions():
  setup = _tpu("setup", "--repo", "r").stdout
  assert "uv venv -q --python 3.11 ~/venv" in setup
  assert "sys.version_info < (3, 11)" in setup  # fails early, saying so
  assert ("uv pip install -q --python ~/venv/bin/python -c constraints.txt"
          " -e '\\''.[gcs]'\\'' '\\''jax[tpu]'\\''") in setup
  assert "gcsfuse" not in setup  # gs:// work dirs need no mount
  mounted = _tpu("setup", "--repo", "r", "--mount", "b").stdout
  assert ("[signed-by=/usr/share/keyrings/cloud.google.asc]"
          " https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s)"
          " main") in mounted
  assert "gcsfuse --implicit-dirs b /mnt/bucket" in mounted


@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_runtime_follows_the_accelerator_generation(accelerator, runtime):
  out = _tpu("create", "--type", accelerator)
  assert f"--accelerator-type {accelerator} --version {runtime}" in out.stdout
  queued = _tpu("create", "--type", accelerator, "--queued", "--spot")
  assert (f"gcloud compute tpus queued-resources create ra --node-id ra --zone"
          f" us-central2-b --accelerator-type {accelerator} --runtime-version"
          f" {runtime} --spot") in queued.stdout
  other = "v2-alpha-tpuv6e" if runtime != "v2-alpha-tpuv6e" else runtime + "x"
  wrong = _tpu("create", "--type", accelerator, "--runtime", other)
  assert wrong.returncode == 2
  assert f"does not match --type {accelerator}; its runtime is {runtime}" in (
      wrong.stderr)
  assert ("queued-resources delete ra --zone us-central2-b --force --quiet"
          in _tpu("delete", "--queued").stdout)


def _remote_command(dry_run_output: str) -> str:
  return _remote_commands(dry_run_output)[-1]


def _remote_commands(dry_run_output: str) -> list[str]:
  """The worker-side scripts of a dry run's ssh commands, in order."""
  out = []
  for line in dry_run_output.strip().splitlines():
    words = shlex.split(line)
    if "--command" in words:
      out.append(words[words.index("--command") + 1])
  return out


def test_tpu_train_refuses_while_training_runs_and_stop_ends_it(tmp_path):
  """The worker-side scripts of `train` and `stop`, run here: HOME holds a
  fake checkout whose ra_jax.train sleeps, started the way `train` starts
  it."""
  home = tmp_path / "home"
  (home / "venv" / "bin").mkdir(parents=True)
  os.symlink(sys.executable, home / "venv" / "bin" / "python")
  (home / "ra_jax" / "ra_jax").mkdir(parents=True)
  (home / "ra_jax" / "ra_jax" / "__init__.py").write_text("")
  (home / "ra_jax" / "ra_jax" / "train.py").write_text(
      "import time\ntime.sleep(60)\n")
  env = dict(os.environ, HOME=str(home))

  def worker(*args):
    """The subcommand's worker-side scripts in order, as the one worker;
    the first that fails ends it (as `train` does: all or none)."""
    for script in _remote_commands(_tpu(*args).stdout):
      done = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=90)
      if done.returncode != 0:
        return done
    return done
  pattern = "^[^ ]*/venv/bin/python -m ra_jax[.]train"
  running = lambda: subprocess.run(["pgrep", "-f", pattern],
                                   capture_output=True).returncode == 0
  try:
    started = time.time()
    assert worker("train", "--", "--workdir", "w").returncode == 0
    assert time.time() - started < 10  # returns; training goes on
    deadline = time.time() + 30
    while not running():
      assert time.time() < deadline
      time.sleep(0.1)
    again = worker("train", "--", "--workdir", "w")
    assert again.returncode == 3
    assert "already running and holds the TPU" in again.stderr
    assert worker("stop").returncode == 0
    assert not running()
    assert worker("train", "--restart", "--", "--workdir", "w").returncode == 0
    time.sleep(0.5)
    assert running()
  finally:
    subprocess.run(["pkill", "-KILL", "-f", pattern])


def test_slurm_dry_run_prints_the_batch_script():
  out = _run("launch/slurm.sh", "--nodes", "2", "--gpus_per_node", "4",
             "--partition", "gpu", "--dry-run", "--", *TRAIN)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
               "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=8",
               "#SBATCH --partition=gpu",
               "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK",
               "srun --kill-on-bad-exit=1 --gpu-bind=none python3 -m"
               " ra_jax.train --config"
               " configs/cifar100.py:model=vit_s4\\,loss=ce --workdir"
               " /shared/runs/c100 --config.distributed=on"]:
    assert line in lines, line
  assert not any("--gpus-per-task" in line for line in lines)
  assert not any("JAX_LOCAL_DEVICE_IDS" in line for line in lines)
  per_node = _run("launch/slurm.sh", "--per", "node", "--cpus_per_gpu", "6",
                  "--dry-run", "--", *TRAIN).stdout.splitlines()
  for line in ["#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --cpus-per-task=48",
               "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]:
    assert line in per_node, line


@pytest.mark.parametrize("args,message", [
    (["launch/tpu_pod.sh", "create", "--name", "a", "--zone", "z"],
     "create needs --type"),
    (["launch/tpu_pod.sh", "create", "--name", "a", "--zone", "z", "--type",
      "tpu9-8", "--dry-run"], "unknown accelerator type 'tpu9-8'"),
    # v5e slices are v5litepod-N; there is no v5e-N accelerator type
    (["launch/tpu_pod.sh", "create", "--name", "a", "--zone", "z", "--type",
      "v5e-8", "--dry-run"], "unknown accelerator type 'v5e-8'"),
    (["launch/tpu_pod.sh", "check", "--name", "a", "--zone", "z",
      "--workdir", "/local"], "check needs --workdir gs://"),
    (["launch/tpu_pod.sh", "create", "--zone", "z", "--type", "v4-8"],
     "--name is required"),
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


def _fake_gcloud(tmp_path, states):
  """A PATH whose gcloud answers `queued-resources describe` with the next
  of `states` and accepts everything else."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (tmp_path / "states").write_text("\n".join(states) + "\n")
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(
      "#!/bin/bash\n"
      f"if [[ \"$*\" == *describe* ]]; then head -n 1 {tmp_path}/states;"
      f" sed -i 1d {tmp_path}/states; fi\n")
  gcloud.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("states,status,message", [
    (["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"], 0,
     "queued resource ra is ACTIVE"),
    (["WAITING_FOR_RESOURCES", "FAILED"], 2,
     "queued resource ra is FAILED; delete it"),
    (["SUSPENDED"], 2, "queued resource ra is SUSPENDED"),
])
def test_create_queued_waits_until_active(states, status, message, tmp_path):
  env = dict(os.environ, PATH=_fake_gcloud(tmp_path, states),
             RA_JAX_POLL_SECONDS="0")
  out = subprocess.run(
      ["bash", "launch/tpu_pod.sh", "create", "--name", "ra", "--zone", "z",
       "--type", "v4-8", "--queued"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=60)
  assert out.returncode == status, out.stderr
  assert message in out.stdout + out.stderr


def test_queued_waiting_gives_up_saying_how_to_wait_more(tmp_path):
  env = dict(os.environ, PATH=_fake_gcloud(tmp_path, ["WAITING"] * 5),
             RA_JAX_POLL_SECONDS="0")
  out = subprocess.run(
      ["bash", "launch/tpu_pod.sh", "wait", "--name", "ra", "--zone", "z",
       "--wait_minutes", "0"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=60)
  assert out.returncode == 2
  assert ("is still WAITING after 0 min; wait more with: launch/tpu_pod.sh"
          " wait --name ra --zone z") in out.stderr
  no_wait = _tpu("create", "--type", "v4-8", "--queued", "--no-wait")
  assert "describe" not in no_wait.stdout
  assert "launch/tpu_pod.sh wait --name ra" in no_wait.stderr


def test_train_checks_the_bucket_and_every_worker_before_starting_any():
  scripts = _remote_commands(_tpu("train", "--", "--workdir",
                                  "gs://b/runs/x").stdout)
  assert scripts[0] == ("cd ~/ra_jax && ~/venv/bin/python -m"
                        " ra_jax.training.storage_check gs://b/runs/x")
  assert "pgrep" in scripts[1] and "nohup" not in scripts[1]
  assert "nohup" in scripts[2] and len(scripts) == 3
  local = _remote_commands(_tpu("train", "--", "--workdir", "/tmp/x").stdout)
  assert len(local) == 2  # no bucket to check
  assert _remote_commands(_tpu("check", "--workdir", "gs://b/y").stdout) == [
      "cd ~/ra_jax && ~/venv/bin/python -m ra_jax.training.storage_check"
      " gs://b/y"]


def test_setup_can_run_again():
  setup = _remote_command(_tpu("setup", "--repo", "r").stdout)
  assert setup.startswith("if pgrep")  # not while training holds the TPU
  assert "rm -rf ~/ra_jax; git clone" in setup
  assert "rm -rf ~/venv; uv venv -q --python 3.11 ~/venv" in setup


def test_the_gcs_extra_is_pinned_like_everything_the_tests_install():
  """launch/tpu_pod.sh setup installs `-c constraints.txt -e .[gcs]`: the
  extra's packages and what they pull in have pins too."""
  import re
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  pinned = {line.split("==")[0].strip().lower().replace("_", "-")
            for line in open(os.path.join(ROOT, "constraints.txt"))
            if "==" in line}
  for requirement in extras["gcs"]:
    name = re.split(r"[<>=!\[ ]", requirement)[0].lower().replace("_", "-")
    assert name in pinned, name
  assert {"google-auth", "google-api-core", "aiohttp"} <= pinned
