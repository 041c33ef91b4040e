"""CIFAR-100 (TFDS `cifar100`): 100 classes of 32x32 images.

  python -m ra_jax.train --config configs/cifar100.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  return common.base_config("cifar100", arg, model="resnet18_cifar",
                            epochs=200,
                            checkpoint_every=500)
