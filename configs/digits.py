"""scikit-learn's digits (8x8, 10 classes): the embedded default, no network.

  python -m ra_jax.train --config configs/digits.py --workdir /tmp/digits
"""

from configs import common


def get_config(arg=None):
  # A 16-channel ResNet-18: 8x8 inputs do not need 64 channels.
  return common.base_config("digits", arg, model="resnet18_cifar",
                            embedding_dim=32, epochs=40,
                            global_batch_size=128, width=16, warmup_steps=50,
                            checkpoint_every=100,
                            log_every=50, eval_every=100)
