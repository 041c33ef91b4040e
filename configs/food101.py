"""Food-101 (TFDS `food101`): 101 classes of photos of varying size,
trained at 224 px with the ImageNet stem.

  python -m ra_jax.train --config configs/food101.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  return common.base_config("food101", arg, model="resnet50",
                            image_size=224, epochs=90,
                            checkpoint_every=1000)
