"""100,000 classes, made from a seed (`synthetic_classes`: 8x8 random
patterns plus noise, 4 training images per class, 10,000 queries): the
class anchor margin loss where its repeller would cost C^2 per step,
trained with the neighbour list (train.neighbor_skin; docs/losses.md).

  python -m ra_jax.train --config configs/many_classes.py --workdir /tmp/mc

Anchors start imprinted (models/imprint.py): at the untrained network's
class means, spread to anchor_init_scale 3.75 (the typical pair about three
cutoffs 2m + skin apart at D = 128), so the list starts almost empty and
each step costs O(B D + C D) rather than O(C^2 D). With 4 images a class,
randomly placed anchors do not train at all (measured at 10,000 classes,
docs/losses.md). AdamW: the attractor starts at ~10^3 (the network must
stretch its output ~10x), which the validated SGD rate overshoots.
"""

from configs import common


def get_config(arg=None):
  config = common.base_config("synthetic_classes", arg, model="mlp",
                              embedding_dim=128, epochs=3,
                              global_batch_size=256, width=512,
                              warmup_steps=200, checkpoint_every=1000,
                              log_every=100, eval_every=0)
  if config.loss.name == "cam":
    config.train.neighbor_skin = 0.5
  config.model.anchor_init = "imprinted"
  config.model.anchor_init_scale = 3.75
  config.optim.update(name="adamw", learning_rate=1e-3, weight_decay=0.0,
                      anchor_lr_mult=1.0)
  if common.parse_arg(arg).get("size") == "tiny":
    config.dataset.num_classes = 1000  # the list's build is C^2
  config.eval.subset_queries = 1000
  config.eval.subset_database = 20000
  return config
