"""train_and_evaluate end to end on digits: results, resume, bad work dirs."""

import dataclasses
import glob
import json
import math
import os
import struct

import jax
import ml_collections
import numpy as np
import pytest

from configs import digits, validated
from ra_jax import data, losses, models
from ra_jax.trained import TrainedRun
from ra_jax.training import evaluation, experiment, loop
from ra_jax.training import workdir as workdir_lib
from tests import runs


def _tensorboard_tags(directory) -> set[str]:
  """Scalar tags in TensorBoard event files (TFRecord framing: length,
  length crc, payload, payload crc)."""
  from tensorboardX.proto import event_pb2
  tags = set()
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    with open(path, "rb") as f:
      raw = f.read()
    offset = 0
    while offset < len(raw):
      (length,) = struct.unpack("<Q", raw[offset:offset + 8])
      event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
      tags.update(v.tag for v in event.summary.value)
      offset += 16 + length
  return tags


def test_digits_tiny_run_writes_results(shared_digits_run):
  workdir = shared_digits_run
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["steps"] == runs.SHARED_STEPS == 8
  for key in ("map", "map@10", "precision@10", "mrr"):
    assert 0.0 <= saved["exact"][key] <= 1.0
  assert saved["exact"]["num_queries"] == 450
  searches = saved["searches"]  # one row per search: exact, 1 list, 2
  assert [(r["search"], r["list_source"], r["lists"]) for r in searches] == [
      ("exact", None, None), ("two_stage", "labels", 1),
      ("two_stage", "labels", 2)]
  assert searches[0]["metrics"] == saved["exact"]
  for row in searches:  # timed, and ranked in full
    assert row["seconds"] > 0
    assert set(row["metrics"]) >= {"precision@10", "map@100", "map"}
  assert (searches[1]["distance_fraction"] <
          searches[2]["distance_fraction"] < 1.0 ==
          searches[0]["distance_fraction"])
  assert 0.0 <= saved["nearest_anchor_accuracy"] <= 1.0
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == list(range(1, 9))
  assert all(math.isfinite(r["train/loss"]) for r in rows)
  evaluated = [r["step"] for r in rows if "eval/map@100" in r]
  assert evaluated == [4, 8]  # every 4 steps and at the end
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  for row in rows:
    assert {"train/attract", "train/repel", "train/norm"} <= set(row)
  assert saved["train_images_per_second"] > 0
  assert rows[-1]["train/images_per_second"] == pytest.approx(
      saved["train_images_per_second"], rel=0.2)
  tags = _tensorboard_tags(os.path.join(workdir, "tensorboard"))
  # TensorBoard tags cannot hold "@"; tensorboardX writes "_".
  assert {"train/loss", "train/attract", "eval/map_100"} <= tags
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["loss"] == {"name": "cam", "geometry": "l2",
                            **losses.get_loss("cam").hyperparameters,
                            **validated.LOSS["cam"]}


def test_workdir_of_another_configuration_is_refused(digits_run):
  before = open(os.path.join(digits_run, "results.json")).read()
  other = runs.tiny_config()
  other.loss.margin = 2.0
  with pytest.raises(ValueError, match="another loss configuration"):
    loop.train_and_evaluate(other, digits_run)
  assert open(os.path.join(digits_run, "results.json")).read() == before


def test_config_argument_errors_name_the_key():
  with pytest.raises(ValueError, match="unknown key 'los'"):
    digits.get_config("los=ce")
  with pytest.raises(ValueError, match="loss='hinge'.*cam, ce"):
    digits.get_config("loss=hinge")
  config = digits.get_config("loss=triplet,shot=5")
  assert config.loss.mining == "semi_hard" and config.dataset.shot == 5
  assert config.dataset.images_per_class == 4


@pytest.mark.parametrize("name,query_split", [
    ("cifar100", "test"), ("svhn", "test"), ("food101", "validation"),
    ("fashion_mnist", "test")])
def test_every_catalogue_config_builds_its_tiny_variant_on_mock_data(
    name, query_split, tmp_path):
  import importlib
  import tensorflow_datasets as tfds
  config = importlib.import_module(f"configs.{name}").get_config("size=tiny")
  config.dataset.builder = "catalogue"
  with tfds.testing.mock_data(num_examples=24, data_dir=str(tmp_path / "d")):
    exp = experiment.build(config, str(tmp_path / "run"))
    batch = next(iter(exp.train_pipeline()))
    queries = next(iter(data.eval_dataset(
        exp.source.splits[query_split], exp.augment, batch_size=32,
        process_index=0, process_count=1)))
  assert exp.source.query_split == query_split
  assert len(exp.train_split) == 24 and exp.total_steps == 3
  size = config.dataset.image_size
  assert batch["image"].shape == (16, size, size, exp.image_shape[-1])
  # every query (Food-101's of any size) resized and cropped to the input
  assert queries["image"].shape == (32, size, size, exp.image_shape[-1])
  assert queries["mask"].sum() == 24
  abstract = exp.abstract_state()  # the config's model fits its data
  assert abstract.params["head"]["anchors"].shape == (
      exp.source.num_classes, config.model.embedding_dim)


def test_tiny_imagenet_config_builds_on_a_miniature_zip(tmp_path):
  from configs import tiny_imagenet
  from tests.data.test_sources import _miniature_tiny_imagenet
  manual = tmp_path / "manual"
  manual.mkdir()
  _miniature_tiny_imagenet(str(manual))
  config = tiny_imagenet.get_config("size=tiny")
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.dataset.manual_dir = str(manual)
  exp = experiment.build(config, str(tmp_path / "run"))
  batch = next(iter(exp.train_pipeline()))
  assert exp.source.num_classes == 200 and len(exp.train_split) == 400
  assert batch["image"].shape == (16, 32, 32, 3)
  assert exp.source.split_sizes["validation"] == 200


def test_model_argument_builds_a_vit(tmp_path):
  config = digits.get_config("size=tiny,model=vit_s4")
  config.dataset.image_size = 8  # 8x8 digits, 2x2 patches of 4
  # One block: test_step.py trains it, sharded over 8 devices.
  config.model.depth = 1
  exp = experiment.build(config, str(tmp_path))
  params = exp.abstract_state().params
  blocks = [k for k in params["backbone"] if k.startswith("block")]
  assert len(blocks) == 1
  assert params["backbone"]["pos_embed"].shape == (1, 5, 384)


@pytest.mark.slow
def test_a_classifier_loss_trains_evaluates_and_keeps_its_parameters(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a relative --workdir, as users type it
  config = digits.get_config("size=tiny,loss=ce")
  # the loss plumbing is under test, not the ResNet
  config.model.name, config.model.width = "mlp", 32
  config.train.save_params = True
  results = loop.train_and_evaluate(config, "run")
  run = TrainedRun("run", config)
  step, params = run.step, run.state.params
  # the final parameters, kept: the run loads from them without checkpoints
  import shutil
  shutil.rmtree(tmp_path / "run" / "checkpoints")
  kept = TrainedRun("run")
  assert kept.step == step
  assert not (tmp_path / "run" / "checkpoints").exists()  # reading writes
  image = np.zeros((8, 8, 1), np.uint8)
  np.testing.assert_array_equal(kept.embed_image(image),
                                run.embed_image(image))
  assert step == 3 and 0.0 < results["exact"]["map"] <= 1.0
  assert set(models.class_parameters(params)) == {"kernel", "bias"}
  assert "nearest_anchor_accuracy" not in results  # no L2 anchors
  # the classifier's rows as stage 1 (by logit): two-stage search too
  assert [(r["search"], r["class_vectors"]) for r in results["searches"]
          ] == [("exact", None), ("two_stage", "learned"),
                ("two_stage", "learned")]
  logged = json.load(open(tmp_path / "run" / "results.json"))
  assert logged["exact"] == results["exact"]
  assert params["head"]["kernel"].shape == (10, 16)
  assert params["head"]["bias"].shape == (10,)
  assert "two-stage, 1 label list(s)" in evaluation.format_table(results)


def test_pair_losses_get_class_balanced_batches(tmp_path):
  config = digits.get_config("size=tiny,loss=triplet")
  assert config.dataset.images_per_class == 4
  exp = experiment.build(config, str(tmp_path))
  labels = next(iter(exp.train_pipeline()))["label"]
  assert sorted(np.bincount(labels)[np.bincount(labels) > 0]) == [4] * 4
  assert exp.loss.describe(dict(config.loss.items())) == (
      "triplet (margin=0.203, mining=semi_hard)")


def test_few_shot_runs_train_on_their_saved_selection(tmp_path):
  config = digits.get_config("size=tiny,shot=2")
  exp = experiment.build(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # building a run writes nothing
  exp.save_few_shot_selection()  # the trainer does, before training
  saved = json.load(open(tmp_path / "few_shot_indices.json"))
  assert len(saved["indices"]) == len(exp.train_split) == 20
  assert np.bincount(exp.train_labels).tolist() == [2] * 10


def test_training_subset_is_stratified_and_excludes_few_shot(tmp_path):
  config = digits.get_config("size=tiny")
  config.dataset.train_examples = 100
  exp = experiment.build(config, str(tmp_path))
  assert len(exp.train_split) == 100
  assert np.bincount(exp.train_labels, minlength=10).min() >= 9
  assert not (tmp_path / "few_shot_indices.json").exists()
  config.dataset.shot = 2
  with pytest.raises(ValueError, match="dataset.shot and"
                     " dataset.train_examples"):
    experiment.build(config, str(tmp_path))


def test_validation_runs_hold_out_queries_from_the_training_split(tmp_path):
  """Model selection never sees the test split: the queries are a stratified
  hold-out of the training split, the database and the training data the
  rest; few-shot selections come from the rest; the hold-out does not
  depend on the training seed."""
  config = runs.tiny_config()
  config.train.steps, config.eval.every = 2, 0
  config.dataset.validation_examples = 200
  exp = experiment.build(config, str(tmp_path / "a"))
  source = exp.source
  assert (source.query_split, source.database_split) == ("validation",
                                                         "train")
  held = source.splits["validation"].indices
  rest = source.splits["train"].indices
  assert len(held) == 200 and len(rest) == len(exp.train_split) == 1147
  assert not set(held) & set(rest) and len(set(held) | set(rest)) == 1347
  assert np.bincount(source.splits["validation"].labels).min() >= 19
  config.train.seed = 5
  again = experiment.build(config, str(tmp_path / "b")).source
  np.testing.assert_array_equal(again.splits["validation"].indices, held)
  config.dataset.shot = 2
  few = experiment.build(config, str(tmp_path / "c"))
  few.save_few_shot_selection()
  chosen = json.load(open(tmp_path / "c" / "few_shot_indices.json"))
  original = few.train_split.split.indices[few.train_split.indices]
  assert len(original) == 20 and not set(original) & set(held)
  np.testing.assert_array_equal(few.train_split.indices, chosen["indices"])
  config.dataset.query_split = "test"
  with pytest.raises(ValueError, match="validation_examples replaces the"
                     " query and database splits"):
    experiment.build(config, str(tmp_path / "d"))


@pytest.mark.slow
def test_a_validation_run_evaluates_on_its_hold_out(tmp_path):
  config = runs.tiny_config()
  config.train.steps, config.eval.every = 2, 0
  config.dataset.validation_examples = 200
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["dataset"]["query_split"] == "validation"
  assert results["exact"]["num_queries"] == 200
  assert results["dataset"]["split_sizes"]["train"] == 1147


def test_losses_on_the_sphere_embed_on_the_sphere(tmp_path):
  for name, spec in losses.LOSSES.items():
    exp = experiment.build(digits.get_config(f"size=tiny,loss={name}"),
                           str(tmp_path))
    assert exp.loss is spec
    assert exp.geometry == spec.geometry
    assert exp.model.head.l2_normalize == (spec.geometry == "sphere")
  assert losses.get_loss("triplet").geometry == "sphere"
  raw = digits.get_config("size=tiny,loss=triplet")
  raw.loss.geometry = "l2"
  exp = experiment.build(raw, str(tmp_path))
  assert exp.geometry == "l2" and not exp.model.head.l2_normalize
  wrong = digits.get_config("size=tiny,loss=cam")
  wrong.loss.geometry = "sphere"
  with pytest.raises(ValueError, match="loss 'cam': geometry 'sphere' is not"
                     r" one it allows \(l2\)"):
    experiment.build(wrong, str(tmp_path))


def test_runs_saved_before_geometry_existed_keep_their_geometry(tmp_path):
  """A triplet run saved without loss.geometry trained on raw embeddings:
  it is evaluated there, and resuming it is not refused as another
  configuration."""
  config = digits.get_config("size=tiny,loss=triplet")
  config.loss.geometry = "l2"
  saved = json.loads(config.to_json_best_effort())
  del saved["loss"]["geometry"]
  for field in ("validation_examples", "validation_seed", "in_memory"):
    del saved["dataset"][field]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert workdir_lib.config_of(str(tmp_path)).loss.geometry == "l2"
  workdir_lib.check(str(tmp_path), config)
  config.loss.geometry = "sphere"
  with pytest.raises(ValueError, match="another loss configuration"):
    workdir_lib.check(str(tmp_path), config)
  arcface = json.loads(digits.get_config(
      "size=tiny,loss=arcface").to_json_best_effort())
  del arcface["loss"]["geometry"]
  (tmp_path / "config.json").write_text(json.dumps(arcface))
  assert workdir_lib.config_of(str(tmp_path)).loss.geometry == "sphere"


@pytest.mark.parametrize("section, added, changed, refused", [
    ("loss", {"attract_weight": 1.0, "push_weight": 0.0},
     {"push_weight": 0.5}, True),
    ("train", {"neighbor_skin": 0.0, "neighbor_capacity": 0},
     {"neighbor_skin": 0.5, "neighbor_capacity": 1000}, False)])
def test_runs_saved_before_a_field_existed_read_it_as_they_ran(
    tmp_path, section, added, changed, refused):
  """Fields added after runs were saved read as the runs had them (cam's
  weights: the paper's loss, 1 and 0; the neighbour list: off), and
  resuming is not refused. Changing cam's weights then is (another loss);
  the neighbour list changes how the repeller is computed, not its value,
  so a resume may switch it on."""
  config = digits.get_config("size=tiny,loss=cam")
  saved = json.loads(config.to_json_best_effort())
  for field in added:
    del saved[section][field]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  read = workdir_lib.config_of(str(tmp_path))[section]
  assert {field: read[field] for field in added} == added
  workdir_lib.check(str(tmp_path), config)
  config[section].update(changed)
  if refused:
    with pytest.raises(ValueError, match="another loss configuration"):
      workdir_lib.check(str(tmp_path), config)
  else:
    workdir_lib.check(str(tmp_path), config)


def test_two_stage_list_counts_are_checked_before_training(tmp_path):
  config = digits.get_config("size=tiny")
  config.eval.two_stage_lists = (1, 20)
  with pytest.raises(ValueError, match=r"eval.two_stage_lists \(1, 20\):"
                     r" each must be in \[1, 10\]"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_missing_dataset_is_a_clear_error_and_writes_nothing(tmp_path):
  from configs import cifar100
  config = cifar100.get_config("size=tiny")
  config.dataset.data_dir = str(tmp_path / "no_data")
  with pytest.raises(FileNotFoundError, match="'cifar100' is not prepared in"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.slow  # a full ResNet-18 in torch and in flax
def test_pretrained_backbone_starts_the_run(tmp_path):
  pytest.importorskip("torch")
  from safetensors.torch import save_file
  from tests.models import torch_reference
  from ra_jax.training import experiment
  reference = torch_reference.randomize_(
      torch_reference.ResNet((2, 2, 2, 2), False))
  path = str(tmp_path / "resnet18.safetensors")
  save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
            path)
  config = digits.get_config("size=tiny")
  config.model.name, config.model.width = "resnet18", 0
  config.model.pretrained = path
  state = experiment.build(config, str(tmp_path)).init_state()
  rgb = reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(  # digits are gray: RGB kernels summed
      state.params["backbone"]["conv1"]["kernel"],
      rgb.sum(axis=2, keepdims=True), rtol=1e-6)
  np.testing.assert_array_equal(
      state.batch_stats["backbone"]["bn1"]["mean"],
      reference.bn1.running_mean.numpy())
  config.model.pretrained = str(tmp_path / "missing.safetensors")
  with pytest.raises(FileNotFoundError, match="missing.safetensors"):
    experiment.build(config, str(tmp_path)).init_state()


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch):
  import jax.numpy as jnp
  from ra_jax.training import step as step_lib
  real = step_lib.make_train_step

  def poisoned(*args):
    inner = real(*args)

    def train_step(state, batch):
      new_state, metrics = inner(state, batch)
      metrics["loss"] = jnp.where(state.step >= 2, jnp.nan, metrics["loss"])
      return new_state, metrics
    return train_step

  monkeypatch.setattr(step_lib, "make_train_step", poisoned)
  config = runs.tiny_config(steps=4, checkpoint_every=2)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"step 3: .*'attract': .*'loss': nan.*last good"
                           r" checkpoint is step 2 .*lower"
                           r" optim.learning_rate \(now .*optim.grad_clip"):
    loop.train_and_evaluate(config, str(tmp_path))
  saved = os.listdir(tmp_path / "checkpoints")
  assert "2" in saved and "3" not in saved
  assert not (tmp_path / "results.json").exists()


def test_results_of_older_versions_are_read_in_todays_form():
  """A committed final run's results.json (written before search rows):
  its two-stage keys become rows, the same numbers."""
  old = json.load(open(os.path.join(runs.ROOT, "results/archive/final_v1/full/cam/"
                                    "seed0/results.json")))
  assert "searches" not in old and "two_stage_anchors_3" in old
  new = evaluation.upgraded_results(old)
  rows = {(r["search"], r["list_source"], r["lists"]): r
          for r in new["searches"]}
  assert list(rows)[0] == ("exact", None, None)
  assert rows[("exact", None, None)]["metrics"] == old["exact"]
  assert rows[("exact", None, None)]["seconds"] == old["exact_search_seconds"]
  assert rows[("exact", None, None)]["distance_computations"] == 60000
  for source, key in (("labels", "two_stage_2"),
                      ("anchors", "two_stage_anchors_3")):
    lists = int(key[-1])
    row = rows[("two_stage", source, lists)]
    assert row["metrics"]["map"] == old[key]["map"]
    assert row["seconds"] == old[key]["seconds"]
    assert row["distance_fraction"] == old[key]["distance_fraction"]
  assert not any(k.startswith("two_stage") for k in new)
  assert evaluation.upgraded_results(new) == new  # today's form stays
  table = evaluation.format_table(old)
  assert "two-stage, 3 anchor list(s)" in table and "0.9072" in table


def test_a_neighbour_list_trains_the_same_run_and_resumes(tmp_path):
  """train.neighbor_skin > 0 changes how the repeller is computed, not
  what it is: a run with the list, stopped at step 4 and resumed (the list
  rebuilt from the restored anchors, not checkpointed), ends where the run
  without it does."""
  import shutil
  dense = loop.train(runs.tiny_config(), str(tmp_path / "dense"))
  listed = runs.tiny_config(neighbor_skin=0.5)
  whole = loop.train(listed, str(tmp_path / "listed"))
  shutil.copytree(tmp_path / "listed", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / workdir_lib.CHECKPOINTS /
                str(runs.SHARED_STEPS))
  resumed = loop.train(listed, str(tmp_path / "resumed"))
  assert resumed.start_step == 4
  assert isinstance(resumed.state.neighbors, losses.RepulsionNeighbors)
  for run in (whole, resumed):
    for got, want in zip(jax.tree.leaves(run.state.params),
                         jax.tree.leaves(dense.state.params)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  logged = [json.loads(line) for line in
            (tmp_path / "listed" / workdir_lib.METRICS).read_text()
            .splitlines()]
  assert all(row["train/neighbor_builds"] >= 1 for row in logged
             if "train/loss" in row)
  restored = experiment.build(listed, str(tmp_path / "resumed"))
  assert restored.abstract_state().neighbors is None  # not checkpointed


def test_a_neighbour_list_needs_a_loss_with_a_repeller():
  config = runs.tiny_config("ce", neighbor_skin=0.5)
  with pytest.raises(ValueError, match=r"train.neighbor_skin=0.5: loss 'ce'"
                     " has no repeller"):
    experiment.build(config, "unused")
  config = runs.tiny_config(neighbor_skin=-1.0)
  with pytest.raises(ValueError, match="train.neighbor_skin=-1.0"):
    experiment.build(config, "unused")


def test_the_many_class_config_trains_with_its_neighbour_list(tmp_path):
  from configs import many_classes
  config = many_classes.get_config("size=tiny")
  assert config.train.neighbor_skin > 0
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["searches"] and 0 <= results["nearest_anchor_accuracy"] <= 1
  logged = (tmp_path / workdir_lib.METRICS).read_text()
  assert "train/neighbor_builds" in logged
  assert experiment.build(config, str(tmp_path)).source.num_classes == 1000


def test_imprinted_anchors_are_the_untrained_networks_class_means(tmp_path):
  """anchor_init="imprinted": the network starts as with "normal" (same
  seed), and every anchor is its class's centred mean embedding under it,
  scaled (models/imprint.py); computed here from the embeddings directly."""
  config = digits.get_config("size=tiny,loss=cam")
  config.model.name = "mlp"  # a ResNet's init compiles for seconds
  config.model.anchor_init_scale = 2.0
  config.model.anchor_init = "imprinted"
  exp = experiment.build(config, str(tmp_path))
  state = exp.init_state()
  normal = ml_collections.ConfigDict(config.to_dict())
  normal.model.anchor_init = "normal"
  # The model's init is the same for both: only init_state reads the field.
  plain = dataclasses.replace(exp, config=normal).init_state()
  def network(params):
    return {**params, "head": {k: v for k, v in params["head"].items()
                               if k != "anchors"}}
  jax.tree.map(np.testing.assert_array_equal, network(plain.params),
               network(state.params))
  apply = jax.jit(lambda v, x: exp.model.apply(v, x, train=False))
  embeddings, labels = evaluation.embed(apply, evaluation.variables_of(plain),
                                        exp.train_split, exp.augment, 64)
  means = np.stack([embeddings[labels == y].mean(0)
                    for y in range(exp.source.num_classes)])
  means -= embeddings.mean(0)
  means *= 2.0 * np.sqrt(means.shape[1]) / np.sqrt(
      np.mean(np.sum(means ** 2, 1)))
  np.testing.assert_allclose(state.params["head"]["anchors"], means,
                             rtol=1e-4, atol=1e-4)


def test_imprinting_a_loss_without_class_vectors_changes_nothing(tmp_path):
  config = digits.get_config("size=tiny,loss=triplet")
  config.model.name = "mlp"
  config.model.anchor_init = "imprinted"
  exp = experiment.build(config, str(tmp_path))
  state = exp.init_state()
  assert not models.class_parameters(state.params)
  normal = ml_collections.ConfigDict(config.to_dict())
  normal.model.anchor_init = "normal"
  jax.tree.map(np.testing.assert_array_equal, state.params,
               dataclasses.replace(exp, config=normal).init_state().params)
