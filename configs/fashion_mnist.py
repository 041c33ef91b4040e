"""Fashion-MNIST: 10 classes of 28x28 images; builds offline from Debian's
dataset-fashion-mnist when the TFDS catalogue data is not prepared.

  python -m ra_jax.train --config configs/fashion_mnist.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  return common.base_config("fashion_mnist", arg, model="resnet18_cifar",
                            image_size=28, epochs=30,
                            learning_rate=0.05, checkpoint_every=500)
