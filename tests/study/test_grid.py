"""study/grid.py and search_spaces.py: which runs, with which settings,
and what a finished run leaves under results/."""

import json
import math
import pathlib

import pytest

from ra_jax import losses
from study import grid, rules, search_spaces, settings

FASHION = settings.FASHION_MNIST


def _dataset(config) -> dict:
  """What run_stage checks the dataset by, without building it."""
  return {"name": config.dataset.name, "fingerprint": "0123"}


def test_every_registered_loss_gets_the_same_number_of_trials():
  assert set(search_spaces.LOSS_SPACES) == set(losses.LOSSES)
  runs = grid.tuning_runs(FASHION)
  assert len(runs) == len(losses.LOSSES) * search_spaces.TRIALS
  assert search_spaces.TRIALS >= 8
  assert len({r.path for r in runs}) == len(runs)


def test_every_trial_shares_the_recipe_and_holds_out_validation():
  configs = {run.path: run.config() for run in grid.tuning_runs(FASHION)}
  for path, config in configs.items():
    assert (config.model.name, config.model.width,
            config.model.embedding_dim) == ("resnet18_cifar", 8, 128), path
    assert (config.train.global_batch_size,
            config.dataset.images_per_class) == (250, 25), path
    assert config.train.epochs == FASHION.tuning_epochs
    assert config.dataset.validation_examples == 10000
    assert not config.dataset.query_split and config.train.seed == 0
    assert config.loss.geometry == losses.get_loss(
        config.loss.name).geometry


def test_trial_k_has_the_same_optimizer_and_learning_rate_for_every_loss():
  by_trial = {}
  for run in grid.tuning_runs(FASHION):
    k = int(run.path.rsplit("trial", 1)[1])
    shared = {f: v for f, v in run.settings.items()
              if f.startswith("optim.") and f != "optim.anchor_lr_mult"}
    by_trial.setdefault(k, []).append(shared)
  for k, trial_settings in by_trial.items():
    assert all(s == trial_settings[0] for s in trial_settings)
    name = trial_settings[0]["optim.name"]
    assert name == ("sgd" if k % 2 == 0 else "adamw")
    lr = search_spaces.OPTIMIZERS[name][1]
    assert lr.low <= trial_settings[0]["optim.learning_rate"] <= lr.high
  for name, (_, lr) in search_spaces.OPTIMIZERS.items():  # stratified
    rates = sorted(s[0]["optim.learning_rate"] for s in by_trial.values()
                   if s[0]["optim.name"] == name)
    strata = [int(len(rates) * (math.log(r) - math.log(lr.low)) /
                  (math.log(lr.high) - math.log(lr.low))) for r in rates]
    assert strata == list(range(len(rates)))


def test_loss_hyperparameters_cover_their_ranges():
  for loss, space in search_spaces.LOSS_SPACES.items():
    trials = search_spaces.FASHION.loss_trials(loss)
    for field, dim in space.items():
      values = [t[field] for t in trials]
      if isinstance(dim, search_spaces.Choice):
        assert set(values) == set(dim.values), (loss, field)
        continue
      assert all(dim.low <= v <= dim.high for v in values), (loss, field)
      assert len(set(values)) == len(values)
    config = grid.Run("x", "tuning", loss, trials[0], setting=FASHION).config()
    for field in space:  # each names a real config field
      section, key = field.split(".")
      assert config[section][key] == trials[0][field]


def test_a_finished_run_leaves_its_small_files_and_is_done(tmp_path):
  run = grid.tuning_runs(FASHION)[0]
  workdir = tmp_path / "work"
  (workdir / "checkpoints" / "200").mkdir(parents=True)
  for name in ("results.json", "config.json", "metrics.jsonl"):
    (workdir / name).write_text(json.dumps({"file": name}))
  (workdir / "params.msgpack").write_bytes(bytes(range(256)))  # binary
  results = str(tmp_path / "results")
  assert not grid.done(results, run)
  grid.keep(str(workdir), results, run)
  assert grid.done(results, run)
  kept = tmp_path / "results" / run.path
  assert sorted(p.name for p in kept.iterdir()) == sorted(grid.KEPT_FILES)
  assert json.loads((kept / "grid.json").read_text())["settings"] == (
      json.loads(json.dumps(run.settings)))
  assert json.loads((kept / "metrics.jsonl").read_text()) == {
      "file": "metrics.jsonl"}
  assert (kept / "params.msgpack").read_bytes() == bytes(range(256))


def test_the_protocol_states_the_search_spaces():
  described = json.loads(json.dumps(grid.protocol(FASHION)))
  assert described["search"]["trials_per_loss"] == search_spaces.TRIALS
  assert set(described["search"]["losses"]) == set(losses.LOSSES)
  assert described["search"]["losses"]["cam"]["loss.margin"] == (
      "log-uniform [0.5, 8]")


def _fake(results, path, value, curve=()):
  """A finished run under `results` with mAP `value` (and an eval/map
  curve of (step, mAP) pairs)."""
  run_dir = results / path
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "metrics.jsonl").write_text("".join(
      json.dumps({"step": s, "eval/map": v}) + "\n" for s, v in curve))
  (run_dir / "results.json").write_text(json.dumps({"exact": {"map": value}}))


def _tuned(results, scores, setting=FASHION):
  """Every loss's trials; trial k of loss L scores scores.get((L, k),
  0.5 + k / 1000)."""
  for loss in setting.losses:
    for k in range(setting.search.trials):
      value = scores.get((loss, k), 0.5 + k / 1000)
      _fake(results, f"tuning/{loss}/trial{k}", value)


def _variants_done(results):
  """Every variant run; attract_warmup wins on both seeds, the others on
  one."""
  _fake(results, "variants/cam/tuned/seed1", 0.88)
  for name in set(grid.VARIANT_TEXT) - {rules.COMBINED}:
    for seed, value in ((0, 0.91), (1, 0.89)):
      _fake(results, f"variants/cam/{name}/seed{seed}",
            value if name == "attract_warmup" else (0.95, 0.85)[seed])


def test_later_stages_wait_for_the_ones_before(tmp_path):
  results = str(tmp_path)
  for stage in ("variants", "length", "final", "ablation"):
    with pytest.raises(ValueError, match="has not finished"):
      grid.plan(FASHION, stage, results)
  _tuned(tmp_path, {})
  (tmp_path / "tuning/ce/trial3/results.json").unlink()
  with pytest.raises(ValueError, match=r"the tuning of 'ce' has not finished:"
                     r" trials \[3\]"):
    grid.best_trial(FASHION, results, "ce")


@pytest.fixture
def tuned(tmp_path):
  """A results directory whose tuning has run: cam's best trial is 2,
  triplet (trial 5) the best baseline."""
  _tuned(tmp_path, {("cam", 2): 0.9, ("triplet", 5): 0.8, ("ce", 1): 0.7})
  return tmp_path


def _converged_lengths(results):
  """The baseline still rising at 12 epochs, converged at 24."""
  rising = [(s, 0.7 + s / 24000) for s in range(200, 2401, 200)]
  _fake(results, "length/triplet/epochs12", rising[-1][1], rising)
  flat = [(s, 0.8 + min(s, 3000) / 1e6) for s in range(200, 4801, 200)]
  _fake(results, "length/triplet/epochs24", flat[-1][1], flat)


def test_selection_takes_each_losss_best_trial(tuned):
  results = str(tuned)
  assert grid.best_trial(FASHION, results, "cam") == (
      2, search_spaces.FASHION.loss_trials("cam")[2])
  assert grid.best_baseline(FASHION, results) == "triplet"


def test_variants_change_the_tuned_setting_one_way_each(tuned):
  variants = grid.variant_runs(FASHION, str(tuned))
  assert [r.path for r in variants][:1] == ["variants/cam/tuned/seed1"]
  singles = set(grid.VARIANT_TEXT) - {rules.COMBINED}
  assert len(variants) == 1 + 2 * len(singles)
  assert {r.path.split("/")[2] for r in variants[1:]} == singles
  push = next(r for r in variants if "/push/" in r.path)
  assert push.settings["loss.push_weight"] == 1.0
  for run in variants:  # every setting lands in a field of the config
    config = run.config()
    for field, value in run.settings.items():
      section, key = field.split(".")
      assert config[section][key] == value, (run.path, field)
  margin = search_spaces.FASHION.loss_trials("cam")[2]["loss.margin"]
  ortho = next(r for r in variants if "orthogonal_init" in r.path)
  assert ortho.settings["model.anchor_init"] == "orthogonal"
  # rows of norm scale * sqrt(D): pairwise distance exactly 2 * margin
  assert ortho.settings["model.anchor_init_scale"] * math.sqrt(
      2 * 128) == pytest.approx(2 * margin)


def test_a_variant_winning_on_every_seed_is_adopted(tuned):
  results = str(tuned)
  planned = len(grid.variant_runs(FASHION, results))
  with pytest.raises(ValueError, match="have not all run"):
    grid.adopted_variant(FASHION, results)
  _variants_done(tuned)
  assert grid.adopted_variant(FASHION, results) == "attract_warmup"
  assert len(grid.variant_runs(FASHION, results)) == planned  # no combination
  assert "train.loss_warmup_steps" not in grid.final_settings(FASHION, results, "cam")
  assert grid.final_settings(FASHION, results, "cam", variant=True)[
      "train.loss_warmup_steps"] == (
      settings.RECIPE["optim.warmup_steps"])


def test_lengths_run_until_the_best_baseline_converges(tuned):
  results = str(tuned)
  _variants_done(tuned)
  lengths = grid.length_runs(FASHION, results)
  assert [r.path for r in lengths][:2] == ["length/triplet/epochs12",
                                           "length/cam/epochs12"]
  assert len(lengths) == 4  # the first length has not shown convergence
  assert lengths[0].config().eval.every == 200
  with pytest.raises(ValueError, match="no length"):
    grid.final_epochs(FASHION, results)
  rising = [(s, 0.7 + s / 24000) for s in range(200, 2401, 200)]
  _fake(tuned, "length/triplet/epochs12", rising[-1][1], rising)
  assert rules.last_quarter_gain(rising) == pytest.approx(0.025)
  with pytest.raises(ValueError, match="no length"):
    grid.final_epochs(FASHION, results)
  _converged_lengths(tuned)
  assert grid.final_epochs(FASHION, results) == 24


def test_a_baseline_still_rising_at_the_longest_length_is_capped(tuned):
  """The finals train the setting's longest length when the baseline has
  run it without converging: the cap, not an error that blocks them."""
  results = str(tuned)
  _variants_done(tuned)
  rising = [(s, 0.7 + s / 24000) for s in range(200, 4801, 200)]
  _fake(tuned, "length/triplet/epochs12", rising[11][1], rising[:12])
  with pytest.raises(ValueError, match="longest has not run"):
    grid.final_epochs(FASHION, results)
  assert [r.path for r in grid.length_runs(FASHION, results)][2:] == [
      "length/triplet/epochs24", "length/cam/epochs24"]
  _fake(tuned, "length/triplet/epochs24", rising[-1][1], rising)
  assert rules.last_quarter_gain(rising) >= grid.CONVERGED
  assert grid.final_epochs(FASHION, results) == FASHION.length_epochs[-1]
  assert {r.config().train.epochs for r in grid.final_runs(FASHION, results)
          if "/full/" in r.path} == {24}


def test_final_runs_put_the_headline_comparison_first(tuned):
  results = str(tuned)
  _variants_done(tuned)
  _converged_lengths(tuned)
  final = grid.final_runs(FASHION, results)
  assert len(final) == len(search_spaces.LOSS_SPACES) * 3 * 2
  assert [r.path for r in final][:4] == [  # the headline comparison first
      "final/full/cam/seed0", "final/10-shot/cam/seed0",
      "final/full/triplet/seed0", "final/10-shot/triplet/seed0"]
  cam = next(r for r in final if r.path == "final/full/cam/seed2").config()
  assert (cam.train.epochs, cam.train.seed, cam.eval.per_query) == (
      24, 2, True)
  assert (cam.eval.class_vectors, cam.train.save_params) == (
      ("learned", "centroids"), True)
  # the headline: the 8 trials' selection, as every loss has it
  assert cam.train.loss_warmup_steps == 0
  assert cam.dataset.validation_examples == 0  # the test protocol
  few = next(r for r in final if r.path == "final/10-shot/ce/seed1").config()
  assert (few.dataset.shot, few.dataset.shot_seed, few.train.steps) == (
      10, 1, 300)
  assert few.dataset.shot_holdout == 10000  # drawn away from validation
  assert few.optim.anchor_lr_mult == search_spaces.FASHION.loss_trials(
      "ce")[1]["optim.anchor_lr_mult"]


def test_the_adopted_variant_runs_its_own_finals_and_the_ablation(tuned):
  results = str(tuned)
  _variants_done(tuned)
  _converged_lengths(tuned)
  variant = grid.variant_final_runs(FASHION, results)
  assert [r.path for r in variant][:2] == ["variant_final/full/cam/seed0",
                                           "variant_final/10-shot/cam/seed0"]
  assert {r.stage for r in variant} == {"variant_final"}
  full = variant[0].config()
  assert full.train.loss_warmup_steps == 100  # attract_warmup, adopted
  # in the few-shot recipe the attractor's warm-up spans its LR warm-up
  assert variant[1].config().train.loss_warmup_steps == 30
  ablation = grid.ablation_runs(FASHION, results)
  assert {r.path.split("/")[2] for r in ablation} == set(grid.ABLATIONS)
  assert all(r.config().train.epochs == 24 and
             r.config().train.loss_warmup_steps == 100 for r in ablation)


def _assert_few_shot_is_the_configs(runs, dataset_config):
  """The 10-shot runs among `runs` train what `dataset_config`'s `shot=10`
  trains, but for the settings each run's selection chose."""
  for run in runs:
    if "/10-shot/" not in run.path:
      continue
    config = run.config()
    user = dataset_config.get_config(f"loss={run.loss},shot=10")
    for field in ("dataset.shot", "dataset.images_per_class",
                  "dataset.shot_holdout", "train.steps", "train.epochs",
                  "train.global_batch_size", "optim.warmup_steps"):
      section, key = field.split(".")
      assert config[section][key] == user[section][key], (run.path, field)


def test_the_few_shot_finals_are_the_configs_few_shot_recipe(tuned):
  """configs/fashion_mnist.py:shot=10 trains what the final 10-shot runs
  train, but for the settings each run's selection chose."""
  from configs import fashion_mnist
  results = str(tuned)
  _variants_done(tuned)
  _converged_lengths(tuned)
  runs = grid.final_runs(FASHION, results) + grid.variant_final_runs(FASHION, results)
  _assert_few_shot_is_the_configs(runs, fashion_mnist)
  cam_variant = next(r for r in runs if r.path.startswith(
      "variant_final/10-shot/cam")).config()
  assert cam_variant.train.loss_warmup_steps == fashion_mnist.get_config(
      "loss=cam,shot=10").train.loss_warmup_steps


@pytest.mark.parametrize("setting", settings.SETTINGS.values(),
                         ids=settings.SETTINGS)
def test_committed_runs_are_the_runs_the_grid_plans_today(setting):
  """Every run under a setting's results trained exactly the configuration
  the grid would give it now (evaluation settings aside: they changed after
  the first trials and do not change what is trained or the exact mAP),
  so changed config defaults cannot silently split the protocol in two."""
  import glob
  import os
  from ra_jax.training import workdir as workdir_lib
  results = setting.results
  plan = {}
  for stage in setting.stages:
    try:
      plan.update({run.path: run for run in grid.plan(setting, stage,
                                                        results)})
    except ValueError:  # a stage whose inputs have not all run yet
      pass
  committed = sorted(os.path.dirname(p)[len(results) + 1:] for p in
                     glob.glob(f"{results}/*/*/*/config.json") +
                     glob.glob(f"{results}/*/*/*/*/config.json"))
  if setting is FASHION:
    assert len(committed) >= 8
  for path in committed:
    assert path in plan, f"{path} is not a run of any stage's plan"
    saved = workdir_lib.config_of(f"{results}/{path}").to_dict()
    planned = json.loads(plan[path].config().to_json_best_effort())
    for section in ("dataset", "model", "loss", "optim", "train"):
      # what a run writes at the end does not change what it trains
      saved[section].pop("save_params", None)
      planned[section].pop("save_params", None)
      assert json.loads(json.dumps(saved[section])) == planned[section], (
          path, section)


def test_configs_carry_the_settings_the_grid_selected():
  """configs/ hold each loss's selection (configs/validated.py; rounded to
  3 significant digits) and the recipe it was selected with."""
  from configs import fashion_mnist
  for loss in losses.LOSSES:
    config = fashion_mnist.get_config(f"loss={loss}")
    for field, selected in grid.final_settings(FASHION, "results/grid", loss,
                                               variant=True).items():
      section, key = field.split(".")
      value = config[section][key]
      if isinstance(selected, float):
        assert value == pytest.approx(selected, rel=5e-3), (loss, field)
      else:
        assert value == selected, (loss, field)
    for field in ("model.name", "model.width", "model.embedding_dim",
                  "train.global_batch_size", "dataset.images_per_class",
                  "optim.warmup_steps"):
      section, key = field.split(".")
      assert config[section][key] == settings.RECIPE[field], (loss, field)
    assert config.train.epochs == grid.final_epochs(FASHION, "results/grid"), loss


def test_vit_configs_carry_the_vit_selection():
  """`model=vit_...` starts each loss the ViT's selection searched from its
  best ViT trial (configs/validated.py, FAMILY_OPTIM; rounded to 3
  significant digits): optimizer, learning rate, clipping and the
  optimizer's own settings."""
  from configs import fashion_mnist
  vit = settings.FASHION_MNIST_VIT
  for loss in vit.losses:
    config = fashion_mnist.get_config(f"{vit.config_arg},loss={loss}")
    _, selected = grid.best_trial(vit, vit.results, loss)
    optim = {f: v for f, v in selected.items() if f.startswith("optim.")}
    assert {"optim.name", "optim.learning_rate",
            "optim.grad_clip"} <= set(optim), loss
    for field, value in optim.items():
      got = config.optim[field.split(".")[1]]
      if isinstance(value, float):
        assert got == pytest.approx(value, rel=5e-3), (loss, field)
      else:
        assert got == value, (loss, field)


def test_several_winning_variants_are_tried_together(tmp_path):
  results = str(tmp_path)
  _tuned(tmp_path, {("cam", 2): 0.9, ("triplet", 5): 0.8})
  _fake(tmp_path, "variants/cam/tuned/seed1", 0.88)
  wins = {"attract_warmup": (0.93, 0.895), "push": (0.92, 0.91)}
  for name in set(grid.VARIANT_TEXT) - {rules.COMBINED}:
    for seed in (0, 1):
      _fake(tmp_path, f"variants/cam/{name}/seed{seed}",
            wins.get(name, (0.95, 0.85))[seed])
  with pytest.raises(ValueError, match="have not all run"):
    grid.adopted_variant(FASHION, results)  # the combination has not run
  combined = [r for r in grid.variant_runs(FASHION, results) if "combined" in r.path]
  assert [r.seed for r in combined] == [0, 1]
  assert combined[0].settings["loss.push_weight"] == 1.0
  assert combined[0].settings["train.loss_warmup_steps"] == (
      settings.RECIPE["optim.warmup_steps"])
  # better than the best single winner (push, by mean) on one seed only
  _fake(tmp_path, "variants/cam/combined/seed0", 0.93)
  _fake(tmp_path, "variants/cam/combined/seed1", 0.905)
  assert grid.adopted_variant(FASHION, results) == "push"
  _fake(tmp_path, "variants/cam/combined/seed1", 0.915)
  assert grid.adopted_variant(FASHION, results) == rules.COMBINED
  selected = grid.final_settings(FASHION, results, "cam", variant=True)
  assert selected["loss.push_weight"] == 1.0
  assert selected["train.loss_warmup_steps"] == 100


def test_a_stage_is_planned_again_after_every_run(tmp_path):
  """A converged first length ends the length stage: the longer runs the
  plan listed before it finished are not trained."""
  results = tmp_path / "results"
  _tuned(results, {("triplet", 5): 0.8})
  _variants_done(results)
  assert len(grid.length_runs(FASHION, str(results))) == 4

  def train(config, workdir):
    steps = config.train.epochs * 200
    flat = [(s, 0.8) for s in range(200, steps + 1, 200)]
    _fake(pathlib.Path(workdir).parent, pathlib.Path(workdir).name, 0.8, flat)
    return {"exact": {"map": 0.8, "precision@10": 0.9}}

  work = str(tmp_path / "work")
  trained = grid.run_stage(FASHION, "length", str(results), work, train=train,
                           diagnose=None, dataset=_dataset)
  assert trained == ["length/triplet/epochs12", "length/cam/epochs12"]
  assert grid.final_epochs(FASHION, str(results)) == 12
  assert json.loads((results / "dataset.json").read_text()) == _dataset(
      grid.length_runs(FASHION, str(results))[0].config())
  assert grid.run_stage(FASHION, "length", str(results), work, train=train,
                        dataset=_dataset) == []
  # Final runs: cross-entropy's full-set runs are diagnosed as they finish.
  diagnosed = []

  def diagnose(workdir):
    diagnosed.append(workdir)
    return {"workdir": workdir}

  trained = grid.run_stage(FASHION, "final", str(results), work, only="seed1",
                           train=train, diagnose=diagnose, dataset=_dataset)
  assert len(trained) == len(search_spaces.LOSS_SPACES) * 2
  assert diagnosed == [f"{work}/final/full/ce/seed1"]
  kept = results / "diagnosis" / "embedding_choices_ce_final_seed1.json"
  assert json.loads(kept.read_text()) == {"workdir": diagnosed[0]}


@pytest.mark.parametrize("setting", settings.SETTINGS.values(),
                         ids=settings.SETTINGS)
def test_the_committed_protocol_is_the_one_the_grid_states_today(setting):
  """<results>/protocol.json (what the report reads) is rewritten by every
  stage's start; a change to the protocol must be committed with it."""
  path = pathlib.Path(setting.results) / "protocol.json"
  if setting is not FASHION and not path.exists():
    pytest.skip(f"no stage of {setting.name} has started")
  committed = json.loads(path.read_text())
  assert committed == json.loads(json.dumps(grid.protocol(setting)))


CARRIED = [settings.FONT_CHARS, settings.FASHION_MNIST_VIT]


@pytest.mark.parametrize("setting", CARRIED, ids=lambda s: s.name)
def test_other_settings_search_the_optimizer_with_fashions_loss_settings(
    setting):
  """Issue 30: 4 trials per loss over optimizer and learning rate (and, for
  the ViT, clipping), the same for every loss, each loss's own
  hyperparameters carried over from Fashion-MNIST's best trial."""
  runs = grid.tuning_runs(setting)
  assert len(runs) == 4 * len(settings.CORE_LOSSES)
  assert set(setting.losses) == set(settings.CORE_LOSSES)
  by_trial = {}
  for run in runs:
    _, fashion = grid.best_trial(FASHION, "results/grid", run.loss)
    own = {f: v for f, v in fashion.items()
           if f in search_spaces.LOSS_SPACES[run.loss]}
    assert own and {f: run.settings[f] for f in own} == own, run.path
    shared = {f: v for f, v in run.settings.items()
              if f.startswith("optim.") and f != "optim.anchor_lr_mult"}
    by_trial.setdefault(run.path.rsplit("trial", 1)[1], []).append(shared)
    config = run.config()
    assert config.train.epochs == setting.tuning_epochs
    assert config.train.seed == 0
  for trials in by_trial.values():
    assert all(t == trials[0] for t in trials)
  names = [by_trial[str(k)][0]["optim.name"] for k in range(4)]
  assert names == ["sgd", "adamw", "sgd", "adamw"]
  if setting is settings.FASHION_MNIST_VIT:  # clipped and not, per optimizer
    for name in ("sgd", "adamw"):
      assert {t[0]["optim.grad_clip"] for t in by_trial.values()
              if t[0]["optim.name"] == name} == {0.0, 1.0}
    config = runs[0].config()
    assert (config.model.name, config.model.depth) == ("vit_ti7", 6)
    assert config.dataset.validation_examples == 10000
  else:  # the builder's own validation split, against the training split
    config = runs[0].config()
    assert (config.dataset.name, config.dataset.query_split,
            config.dataset.validation_examples) == ("font_chars",
                                                    "validation", 0)
    assert config.train.global_batch_size == 250
    assert config.dataset.images_per_class == 5
  protocol = grid.protocol(setting)
  assert protocol["carried"]["cam"]["loss.margin"] == pytest.approx(6.46,
                                                                    rel=1e-2)
  assert "variants" not in protocol and "targets" not in protocol
  with pytest.raises(ValueError, match="has no stage 'variants'"):
    grid.plan(setting, "variants", "results/grid")


def test_font_chars_finals_are_its_configs_recipe(tmp_path):
  """The font_chars finals: test protocol, full set and
  configs/font_chars.py:shot=10 (its few-shot recipe, nothing held out)."""
  from configs import font_chars
  setting = settings.FONT_CHARS
  _tuned(tmp_path, {("triplet", 1): 0.8}, setting)
  curve = [(s, 0.8) for s in range(200, 2401, 200)]
  _fake(tmp_path, "length/triplet/epochs12", 0.8, curve)
  runs = grid.final_runs(setting, str(tmp_path))
  assert len(runs) == len(settings.CORE_LOSSES) * 3 * 2
  full = runs[0].config()
  assert (full.dataset.query_split, full.train.epochs, full.eval.every) == (
      "", 12, 200)
  _assert_few_shot_is_the_configs(runs, font_chars)
  vit = settings.FASHION_MNIST_VIT
  _tuned(tmp_path / "vit", {("triplet", 1): 0.8}, vit)
  _fake(tmp_path / "vit", "length/triplet/epochs12", 0.8, curve)
  assert all("/full/" in r.path for r in grid.final_runs(
      vit, str(tmp_path / "vit")))  # the ViT: full set only


def test_a_diverged_trial_ranks_last_and_the_stage_goes_on(tmp_path):
  from ra_jax.training.loop import NonFiniteLossError
  setting = settings.FONT_CHARS
  results, work = tmp_path / "results", tmp_path / "work"

  def train(config, workdir):
    path = pathlib.Path(workdir).relative_to(work)
    if str(path) in ("tuning/cam/trial0", "final/full/cam/seed0"):
      raise NonFiniteLossError("non-finite loss at step 150", 150)
    value = 0.5 + int(str(path)[-1]) / 100
    _fake(pathlib.Path(workdir).parent, pathlib.Path(workdir).name, value)
    return {"exact": {"map": value, "precision@10": value}}

  trained = grid.run_stage(setting, "tuning", str(results), str(work),
                           train=train, dataset=_dataset)
  assert len(trained) == 20
  kept = json.loads((results / "tuning/cam/trial0/results.json").read_text())
  assert kept == {grid.DIVERGED: "non-finite loss at step 150",
                  "steps": 150}
  assert grid.best_trial(setting, str(results), "cam")[0] == 3
  assert grid.validation_map(kept) == -math.inf
  curve = [(s, 0.8) for s in range(200, 2401, 200)]
  leader = grid.best_baseline(setting, str(results))
  _fake(results, f"length/{leader}/epochs12", 0.8, curve)
  with pytest.raises(NonFiniteLossError):  # a final run must not diverge
    grid.run_stage(setting, "final", str(results), str(work), train=train,
                   only="full/cam/seed0", dataset=_dataset)
  for k in range(4):
    _fake(results, f"tuning/ce/trial{k}", 0.5)
    (results / f"tuning/ce/trial{k}/results.json").write_text(
        json.dumps({grid.DIVERGED: "x", "steps": 1}))
  with pytest.raises(ValueError, match="every tuning trial of 'ce'"):
    grid.best_trial(setting, str(results), "ce")


# A study.grid worker on the length stage whose training is faked: the
# leader (triplet) converges at 12 epochs after a second; the class anchor
# margin loss's run takes no time. Each trained path is appended to a log.
_LENGTH_WORKER = """
import json, pathlib, sys, time
from tests.study.test_grid import FASHION, _dataset, _fake
from study import grid

results, work, log = sys.argv[1:4]

def train(config, workdir):
  with open(log, "a") as f:
    f.write(workdir.split("/work/", 1)[1] + "\\n")
  if config.loss.name == "triplet":
    time.sleep(1.0)
  steps = config.train.epochs * 200
  flat = [(s, 0.8) for s in range(200, steps + 1, 200)]
  _fake(pathlib.Path(workdir).parent, pathlib.Path(workdir).name, 0.8, flat)
  return {"exact": {"map": 0.8, "precision@10": 0.9}}

grid.run_stage(FASHION, "length", results, work, train=train,
               dataset=_dataset, poll_seconds=0.05)
"""


def test_two_workers_share_a_stage_and_wait_for_what_decides_it(tmp_path):
  """Two processes on one stage train every run once between them, and
  neither starts a longer length before the leader's shorter one has
  decided whether it is needed (the class anchor margin loss's run ends
  first; without waits_for its worker would start length 24)."""
  import subprocess
  import sys
  results = tmp_path / "results"
  _tuned(results, {("triplet", 5): 0.8})
  _variants_done(results)
  log = tmp_path / "trained.log"
  procs = [subprocess.Popen(
      [sys.executable, "-c", _LENGTH_WORKER, str(results),
       str(tmp_path / "work"), str(log)], cwd=pathlib.Path(__file__).parents[2])
           for _ in range(2)]
  assert [p.wait(timeout=120) for p in procs] == [0, 0]
  assert sorted(log.read_text().split()) == [
      "length/cam/epochs12", "length/triplet/epochs12"]
  assert grid.final_epochs(FASHION, str(results)) == 12


def test_a_run_made_unnecessary_after_planning_is_not_trained(
    tmp_path, monkeypatch):
  """The race two workers hit: a plan read before the leader's length 12
  finished still lists length 24; once claimed, a run the plan no longer
  has (length 12 converged) is released, not trained."""
  results = tmp_path / "results"
  _tuned(results, {("triplet", 5): 0.8})
  _variants_done(results)
  stale = grid.length_runs(FASHION, str(results))
  assert len(stale) == 4
  flat = [(s, 0.8) for s in range(200, 2401, 200)]
  for loss in ("triplet", "cam"):
    _fake(results, f"length/{loss}/epochs12", 0.8, flat)
  plans = iter([stale, stale])  # run_stage's check, then its first plan
  real_plan = grid.plan
  monkeypatch.setattr(grid, "plan", lambda *a: next(plans, None) or
                      real_plan(*a))

  def train(config, workdir):
    raise AssertionError(f"trained {workdir}")

  trained = grid.run_stage(FASHION, "length", str(results),
                           str(tmp_path / "work"), train=train,
                           dataset=_dataset, poll_seconds=0.01)
  assert trained == []


def test_length_runs_wait_for_the_leaders_shorter_run(tmp_path):
  results = tmp_path / "results"
  _tuned(results, {("triplet", 5): 0.8})
  _variants_done(results)
  waits = {r.path: r.waits_for for r in grid.length_runs(FASHION,
                                                         str(results))}
  assert waits == {"length/triplet/epochs12": (),
                   "length/cam/epochs12": (),
                   "length/triplet/epochs24": ("length/triplet/epochs12",),
                   "length/cam/epochs24": ("length/triplet/epochs12",)}


def test_worker_cores_are_equal_shares():
  assert grid.worker_cores(2, [0, 1]) == [{0}, {1}]
  assert grid.worker_cores(2, [0, 1, 2, 3, 4]) == [{0, 1}, {2, 3}]
  with pytest.raises(ValueError, match="only 2 cores"):
    grid.worker_cores(3, [0, 1])


def test_workers_run_as_pinned_processes_with_their_own_logs(tmp_path):
  """`--workers 2` on a stage with nothing left: both workers start, find
  every run done and end; the command's status is theirs."""
  import shutil
  import subprocess
  import sys
  root = pathlib.Path(__file__).parents[2]
  results = tmp_path / "results"
  shutil.copytree(root / FASHION.results / "tuning", results / "tuning")
  command = [sys.executable, "-m", "study.grid", "--stage", "tuning",
             "--results", str(results), "--workdirs", str(tmp_path / "work"),
             "--workers", "2"]
  done = subprocess.run(command, cwd=root, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  assert done.stdout.count("study.grid: worker") == 2
  assert {p.name for p in (tmp_path / "work").glob("worker*.log")} == {
      "worker0.log", "worker1.log"}
  assert (results / "protocol.json").exists()  # each worker ran the stage
  # A stage whose inputs are missing fails before any worker starts.
  command[command.index("tuning")] = "final"
  failed = subprocess.run(command, cwd=root, capture_output=True, text=True,
                          timeout=300)
  assert failed.returncode == 2 and "(--stage length)" in failed.stderr
  assert "study.grid: worker" not in failed.stdout
