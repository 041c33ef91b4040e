"""benchmarks/grid.py and search_spaces.py: which runs, with which settings,
and what a finished run leaves under results/."""

import json
import math

import pytest

from benchmarks import grid, search_spaces
from ra_jax import losses


def test_every_registered_loss_gets_the_same_number_of_trials():
  assert set(search_spaces.LOSS_SPACES) == set(losses.LOSSES)
  runs = grid.tuning_runs()
  assert len(runs) == len(losses.LOSSES) * search_spaces.TRIALS
  assert search_spaces.TRIALS >= 8
  assert len({r.path for r in runs}) == len(runs)


def test_every_trial_shares_the_recipe_and_holds_out_validation():
  configs = {run.path: run.config() for run in grid.tuning_runs()}
  for path, config in configs.items():
    assert (config.model.name, config.model.width,
            config.model.embedding_dim) == ("resnet18_cifar", 8, 128), path
    assert (config.train.global_batch_size,
            config.dataset.images_per_class) == (250, 25), path
    assert config.train.epochs == grid.TUNING_EPOCHS
    assert config.dataset.validation_examples == 10000
    assert not config.dataset.query_split and config.train.seed == 0
    assert config.loss.geometry == losses.get_loss(
        config.loss.name).geometry


def test_trial_k_has_the_same_optimizer_and_learning_rate_for_every_loss():
  by_trial = {}
  for run in grid.tuning_runs():
    k = int(run.path.rsplit("trial", 1)[1])
    shared = {f: v for f, v in run.settings.items()
              if f.startswith("optim.") and f != "optim.anchor_lr_mult"}
    by_trial.setdefault(k, []).append(shared)
  for k, settings in by_trial.items():
    assert all(s == settings[0] for s in settings)
    name = settings[0]["optim.name"]
    assert name == ("sgd" if k % 2 == 0 else "adamw")
    lr = search_spaces.OPTIMIZERS[name][1]
    assert lr.low <= settings[0]["optim.learning_rate"] <= lr.high
  for name, (_, lr) in search_spaces.OPTIMIZERS.items():  # stratified
    rates = sorted(s[0]["optim.learning_rate"] for s in by_trial.values()
                   if s[0]["optim.name"] == name)
    strata = [int(len(rates) * (math.log(r) - math.log(lr.low)) /
                  (math.log(lr.high) - math.log(lr.low))) for r in rates]
    assert strata == list(range(len(rates)))


def test_loss_hyperparameters_cover_their_ranges():
  for loss, space in search_spaces.LOSS_SPACES.items():
    trials = search_spaces.loss_trials(loss)
    for field, dim in space.items():
      values = [t[field] for t in trials]
      if isinstance(dim, search_spaces.Choice):
        assert set(values) == set(dim.values), (loss, field)
        continue
      assert all(dim.low <= v <= dim.high for v in values), (loss, field)
      assert len(set(values)) == len(values)
    config = grid.Run("x", "tuning", loss, trials[0]).config()
    for field in space:  # each names a real config field
      section, key = field.split(".")
      assert config[section][key] == trials[0][field]


def test_a_finished_run_leaves_its_small_files_and_is_done(tmp_path):
  run = grid.tuning_runs()[0]
  workdir = tmp_path / "work"
  (workdir / "checkpoints" / "200").mkdir(parents=True)
  for name in ("results.json", "config.json", "metrics.jsonl"):
    (workdir / name).write_text(json.dumps({"file": name}))
  results = str(tmp_path / "results")
  assert not grid.done(results, run)
  grid.keep(str(workdir), results, run)
  assert grid.done(results, run)
  kept = tmp_path / "results" / run.path
  assert sorted(p.name for p in kept.iterdir()) == sorted(grid.KEPT_FILES)
  assert json.loads((kept / "grid.json").read_text())["settings"] == (
      run.settings)
  assert json.loads((kept / "metrics.jsonl").read_text()) == {
      "file": "metrics.jsonl"}


def test_overrides_parse_literals_and_name_unknown_fields():
  config = grid.recipe("triplet")
  grid.apply_overrides(config, ["optim.learning_rate=0.5", "loss.mining=hard",
                                "dataset.in_memory=never"])
  assert config.optim.learning_rate == 0.5
  assert (config.loss.mining, config.dataset.in_memory) == ("hard", "never")
  with pytest.raises(KeyError, match="learning_rat"):
    grid.apply_overrides(config, ["optim.learning_rat=1"])
  with pytest.raises(ValueError, match="expected FIELD=VALUE"):
    grid.apply_overrides(config, ["optim.learning_rate"])


def test_the_protocol_states_the_search_spaces():
  described = json.loads(json.dumps(grid.protocol()))
  assert described["search"]["trials_per_loss"] == search_spaces.TRIALS
  assert set(described["search"]["losses"]) == set(losses.LOSSES)
  assert described["search"]["losses"]["cam"]["loss.margin"] == (
      "log-uniform [0.5, 8]")
