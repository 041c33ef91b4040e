"""font_chars: 100 classes of characters rendered from Debian's fonts, 32x32
RGB, built offline by ra_jax's TFDS builder
(ra_jax/data/builders/font_chars.py); train, validation and test come from
disjoint font designs (303 / 43 / 87 of the 433 found here).

  apt-get install --no-install-recommends $(python -m ra_jax.data.builders.font_packages)
  python -m ra_jax.train --config configs/font_chars.py[:loss=triplet,shot=10] \
      --workdir DIR

The first run builds the set (9 minutes on 2 cores that a training run
shared) into the TFDS
data dir. Queries are the test split's 10,000 images, the database the
50,000 training images. Model selection queries with the builder's own
validation split, whose designs neither train nor test has:
--config.dataset.query_split=validation. `dataset.name=font_chars/small`
is the few-image build the tests use.

The recipe is Fashion-MNIST's (configs/fashion_mnist.py), carried over and
not yet selected on this set: ResNet-18 with the CIFAR stem at width 8,
12 epochs of 250-image batches, here 5 images of each of 50 classes. It is
not known to work: after one epoch the class anchor margin loss and
cross-entropy are still at chance (exact mAP 0.007 and 0.010), and
cross-entropy on AdamW 1e-3 barely above it (0.015), though after four
epochs on AdamW it reaches exact mAP 0.203, P@1 0.566, and two-stage
mAP 0.574 with one list over 1.2 % of the distances, still improving
(results/font_chars_probe). Unseen font designs in random colours are a
much harder task than Fashion-MNIST; a recipe for it is issue 30's next
selection.
"""

from configs import common
from configs import fashion_mnist


def get_config(arg=None):
  config = common.base_config("font_chars", arg, model="resnet18_cifar",
                              epochs=12, width=8, global_batch_size=250,
                              images_per_class=5, checkpoint_every=500)
  # Fashion-MNIST's few-shot recipe; the validation designs are a split of
  # their own, so no hold-out needs avoiding.
  return fashion_mnist.with_few_shot(config, arg,
                                     **{"dataset.shot_holdout": 0})
