"""SVHN cropped digits (TFDS `svhn_cropped`): 10 classes of 32x32 images.

  python -m ra_jax.train --config configs/svhn.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  return common.base_config("svhn_cropped", arg, model="resnet18_cifar",
                            epochs=50,
                            checkpoint_every=500)
