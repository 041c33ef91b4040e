"""training/writers.py: the metric writer's import of tensorboardX."""

import subprocess
import sys

from tests import runs


def test_tensorboard_events_without_importing_torch(tmp_path):
  """tensorboardX imports PyTorch where it is installed (2.2 s of every
  training run's start here); the writer imports it without, writes its
  events, and leaves torch importable afterwards."""
  script = f"""
import sys
from ra_jax.training import writers
writer = writers.MetricWriter({str(tmp_path)!r}, enabled=True)
writer.write_scalars(1, {{"train/loss": 0.5}})
writer.close()
assert "torch" not in sys.modules, "tensorboardX imported torch"
import torch
print(torch.ones(2).sum().item())
"""
  done = subprocess.run([sys.executable, "-c", script], cwd=runs.ROOT,
                        env=runs.cli_env(), capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "2.0"
  assert list((tmp_path / "tensorboard").iterdir())
