"""Fashion-MNIST: 10 classes of 28x28 images; builds offline from Debian's
dataset-fashion-mnist when the TFDS catalogue data is not prepared.

  python -m ra_jax.train --config configs/fashion_mnist.py[:model=vit_ti7,loss=triplet,shot=10] \
      --workdir DIR

`shot=N` is the study's few-shot recipe (its final 10-shot runs are
`shot=10`): N images of each class, drawn away from the validation hold-out
model selection queried with, 300 steps of class-balanced batches of N
images of each class.
"""

from configs import common

# The few-shot recipe (study/grid.py's final few-shot runs use it as is):
# fields over the full-set config, for `shot` images per class.
FEW_SHOT_STEPS = 300
VALIDATION_EXAMPLES = 10000  # the study's validation hold-out


def few_shot(shot: int) -> dict:
  """The few-shot recipe's dotted fields for `shot` images per class."""
  return {"train.epochs": 0, "train.steps": FEW_SHOT_STEPS,
          "train.global_batch_size": 10 * shot,
          "dataset.images_per_class": shot, "optim.warmup_steps": 30,
          "train.checkpoint_every": 100, "eval.every": 100,
          "dataset.shot_holdout": VALIDATION_EXAMPLES}


def get_config(arg=None):
  # The recipe the grid validated every loss with (study/grid.py,
  # RECIPE; docs/RESULTS.md): ResNet-18 with the CIFAR stem at width 8
  # (sized for the project's 2-core machine; wider is untested), batches of
  # 25 images x 10 classes, 12 epochs: the grid's "length" stage found
  # the best baseline (ArcFace) converged there on validation (+0.006 mAP
  # over the last quarter; results/grid/length/arcface/epochs12).
  config = common.base_config("fashion_mnist", arg, model="resnet18_cifar",
                              epochs=12, width=8, global_batch_size=250,
                              images_per_class=25, checkpoint_every=500)
  return with_few_shot(config, arg)


def with_few_shot(config, arg=None, **fields):
  """`config` on the few-shot recipe when its `shot` asks for one (not at
  size=tiny), with `fields` (dotted) over the recipe's."""
  shot = config.dataset.shot
  if shot and "size=tiny" not in (arg or ""):
    common.set_fields(config, {**few_shot(shot), **fields})
    if config.train.loss_warmup_steps:  # the attractor's, over the LR's
      config.train.loss_warmup_steps = config.optim.warmup_steps
  return config
