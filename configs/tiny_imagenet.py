"""Tiny ImageNet: 200 classes of 64x64 images, from the official zip
(pass --config.dataset.manual_dir the first time).

  python -m ra_jax.train --config configs/tiny_imagenet.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  return common.base_config("tiny_imagenet", arg, model="resnet18",
                            epochs=90,
                            checkpoint_every=1000)
