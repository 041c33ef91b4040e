"""Defaults selected on a validation split by the grid (study/grid.py,
issue 14); docs/RESULTS.md shows the search and the selection, and
results/grid holds the runs. tests/study/test_grid.py checks every value here
against results/grid.

Where they were selected: Fashion-MNIST, 10,000 training images held out
(stratified, seed 0) as queries against the other 50,000; ResNet-18 with the
CIFAR stem at width 8, 128-d embeddings, batches of 25 images x 10 classes;
8 trials per loss of 2 epochs each, the best validation mAP kept. Values are
rounded to 3 significant digits. On the other datasets they are carried
over from Fashion-MNIST, not validated there. The losses' signatures
(ra_jax/losses) keep the literature's constants; the values selected here
replace them in every config.
"""

SGD = {"name": "sgd", "momentum": 0.9, "nesterov": True,
       "weight_decay": 5e-4}
ADAMW = {"name": "adamw", "weight_decay": 0.0}

# `config.optim` per loss: its best tuning trial's optimizer, learning rate,
# weight decay and learning-rate multiplier of the per-class parameters
# (every entry names all four; configs/common.py adds the rest).
OPTIM = {
    # results/grid/tuning/cam/trial2: validation mAP 0.8314
    "cam": {**SGD, "learning_rate": 0.0571, "anchor_lr_mult": 4.19},
    # results/grid/tuning/ce/trial2: 0.7132
    "ce": {**SGD, "learning_rate": 0.0571, "anchor_lr_mult": 1.01},
    # results/grid/tuning/center/trial6: 0.6910
    "center": {**SGD, "learning_rate": 0.0244, "anchor_lr_mult": 1.13},
    # results/grid/tuning/arcface/trial4: 0.8324
    "arcface": {**SGD, "learning_rate": 0.0207, "anchor_lr_mult": 1.46},
    # results/grid/tuning/proxy_anchor/trial4: 0.7210
    "proxy_anchor": {**SGD, "learning_rate": 0.0207, "anchor_lr_mult": 44.1},
    # results/grid/tuning/contrastive/trial3: 0.7505
    "contrastive": {**ADAMW, "learning_rate": 0.00142, "anchor_lr_mult": 1.0},
    # results/grid/tuning/triplet/trial5: 0.7919
    "triplet": {**ADAMW, "learning_rate": 0.00188, "anchor_lr_mult": 1.0},
}

# `config.optim` fields per backbone family and loss, over OPTIM (the loss
# keeps its per-class learning-rate multiplier). OPTIM was selected with a
# ResNet; a ViT diverges under its SGD at 0.0571 without clipping (issue
# 30). A ViT's are the best tuning trial of each loss the ViT's own
# selection searched (study/settings.py, "fashion_mnist_vit": ViT-Ti/7 of
# 6 blocks on Fashion-MNIST, 4 trials per loss over optimizer, learning
# rate and clipping, validation mAP after 2 epochs).
VIT_SIZING = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.0,
              "grad_clip": 1.0}
FAMILY_OPTIM = {
    "vit": {
        # results/grid_vit/tuning/cam/trial2: validation mAP 0.6866
        "cam": {**SGD, "learning_rate": 0.235, "grad_clip": 1.0},
        # results/grid_vit/tuning/ce/trial2: 0.5854
        "ce": {**SGD, "learning_rate": 0.235, "grad_clip": 1.0},
        # results/grid_vit/tuning/contrastive/trial1: 0.6673
        "contrastive": {**ADAMW, "learning_rate": 0.000702,
                        "grad_clip": 1.0},
        # results/grid_vit/tuning/triplet/trial3: 0.7082
        "triplet": {**ADAMW, "learning_rate": 0.00117, "grad_clip": 0.0},
        # results/grid_vit/tuning/arcface/trial1: 0.6853
        "arcface": {**ADAMW, "learning_rate": 0.000702, "grad_clip": 1.0},
        # Not searched on a ViT: the recipe that sized ViT-Ti/7
        # (docs/benchmarks.md, "A ViT sized for this machine"), checked not
        # to diverge in 300 steps with every loss (study/vit_recipe_check.py,
        # results/vit_recipe_check/).
        "center": VIT_SIZING, "proxy_anchor": VIT_SIZING,
    },
}

# `config.loss` per loss: its best tuning trial's own hyperparameters (the
# same trials as OPTIM).
LOSS = {
    # results/grid/tuning/cam/trial2 (the paper states no constants)
    "cam": {"margin": 6.46, "min_norm": 2.2},
    "ce": {},
    # results/grid/tuning/center/trial6 (Wen et al.: 0.003)
    "center": {"center_weight": 0.00687},
    # results/grid/tuning/arcface/trial4 (Deng et al.: 64, 0.5)
    "arcface": {"scale": 19.2, "margin": 0.397},
    # results/grid/tuning/proxy_anchor/trial4 (Kim et al.: 32, 0.1)
    "proxy_anchor": {"scale": 22.8, "margin": 0.178},
    # results/grid/tuning/contrastive/trial3, on the unit sphere
    "contrastive": {"positive_margin": 0.162, "negative_margin": 0.712},
    # results/grid/tuning/triplet/trial5, on the unit sphere (FaceNet: 0.2)
    "triplet": {"margin": 0.203, "mining": "semi_hard"},
}

# Losses whose warm-up weights (the registry's `warmup`) grow from 0 over
# the learning-rate warm-up (`train.loss_warmup_steps` =
# `optim.warmup_steps`): the class anchor margin loss's attractor, variant
# attract_warmup (results/grid/variants/cam/attract_warmup: 0.8353 and
# 0.8433 on seeds 0 and 1 against 0.8314 and 0.8250 for the tuned setting).
LOSS_WARMUP = ("cam",)
