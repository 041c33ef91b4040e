"""benchmarks/grid.py's plan: which runs, with which settings."""

from benchmarks import grid


def test_full_and_quick_plans():
  full = grid.plan(quick=False)
  n = len(grid.LOSSES)  # the registered losses and batch-hard triplet
  assert n == 8
  assert len(full) == n * 3 * 2 + len(grid.KNOBS) + n + n * len(grid.TUNING)
  assert len({r.path for r in full}) == len(full)
  assert not any("/tuning/" in r.path for r in grid.plan(quick=True))
  quick = grid.plan(quick=True)
  assert len(quick) == 4 * 2 + 4 and all(r.seed == 0 for r in quick)
  quick_full = next(r for r in quick if r.path == (
      "fashion_mnist/full/cam/seed0")).config()
  assert quick_full.dataset.train_examples == 10000  # a config field now


def test_every_loss_gets_the_same_training_budget():
  runs = [r for r in grid.plan(quick=False)
          if r.path.startswith("fashion_mnist/full/") and r.seed == 1]
  configs = {r.path.split("/")[2]: r.config() for r in runs}
  assert len(configs) == 8
  for label, config in configs.items():
    assert config.train.seed == 1
    assert (config.model.name, config.model.width) == ("resnet18_cifar", 8)
    assert (config.train.epochs, config.train.global_batch_size) == (1, 120)
    assert config.optim.learning_rate == 0.05
    pair = label.startswith(("triplet", "contrastive"))
    assert config.dataset.images_per_class == (12 if pair else 0)
  assert configs["triplet_hard"].loss.mining == "hard"
  assert configs["triplet"].loss.mining == "semi_hard"
  # every registered loss, at its registry defaults
  from ra_jax import losses
  assert set(losses.LOSSES) <= set(configs)
  for name, spec in losses.LOSSES.items():
    assert configs[name].loss.to_dict() == {"name": name,
                                            **spec.hyperparameters}
  few = next(r for r in grid.plan(quick=False)
             if r.path == "fashion_mnist/10-shot/cam/seed0").config()
  assert (few.dataset.shot, few.train.steps) == (10, 100)
  tuned = {}  # the equal search budget: every loss, every variant
  for run in grid.plan(quick=False):
    if "/tuning/" in run.path:
      label, variant = run.path.split("/")[2].split("@")
      tuned.setdefault(variant, set()).add(label)
  assert tuned == {v: set(grid.LOSSES) for v in grid.TUNING}
  wide = next(r for r in grid.plan(quick=False)
              if r.path == "fashion_mnist/tuning/ce@emb=128/seed0").config()
  assert (wide.optim.learning_rate, wide.model.embedding_dim) == (0.05, 128)
  knob_run = next(r for r in grid.plan(quick=False)
                  if r.path == "fashion_mnist/knobs/no_repel/seed0")
  knob = knob_run.config()
  assert knob.loss.repel_weight == 0.0 and knob.loss.name == "cam"
  assert knob_run.record(quick=False)["variant"] == "no_repel"
