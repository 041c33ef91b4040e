"""Fashion-MNIST: 10 classes of 28x28 images; builds offline from Debian's
dataset-fashion-mnist when the TFDS catalogue data is not prepared.

  python -m ra_jax.train --config configs/fashion_mnist.py[:model=vit_s4,loss=triplet,shot=10] \
      --workdir DIR
"""

from configs import common


def get_config(arg=None):
  # The recipe the grid validated every loss with (study/grid.py,
  # RECIPE; docs/RESULTS.md): ResNet-18 with the CIFAR stem at width 8
  # (sized for the project's 2-core machine; wider is untested), batches of
  # 25 images x 10 classes, 12 epochs: the grid's "length" stage found
  # the best baseline (ArcFace) converged there on validation (+0.006 mAP
  # over the last quarter; results/grid/length/arcface/epochs12).
  return common.base_config("fashion_mnist", arg, model="resnet18_cifar",
                            epochs=12, width=8,
                            global_batch_size=250, images_per_class=25,
                            checkpoint_every=500)
