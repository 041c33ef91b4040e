"""Optimizer rules, the loss dispatch and the sharded train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ra_jax import losses, models
from ra_jax.training import objective, optimizer, step as step_lib
from tests import tiny_models


def _model(name="resnet18_cifar", loss="cam", **kw):
  extra = {"res": dict(width=4), "mlp": dict(width=16),
           # one block: the sharded step is under test, not ViT-S's depth
           "vit": dict(image_size=8, depth=1)}[name[:3]]
  return models.get_model(name, embedding_dim=8, num_classes=4,
                          class_params=losses.get_loss(loss).class_params,
                          **extra, **kw)


def _batch(n=16, seed=0, size=8):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
          "label": (np.arange(n) % 4).astype(np.int32)}


def _config(**overrides):
  return {"name": "sgd", "learning_rate": 0.1, "anchor_lr_mult": 1.0,
          "weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 0.0,
          **overrides}


def _state(model, tx_config, total_steps=10, seed=0):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed),
                          jnp.zeros((1, 8, 8, 3)))
  tx = optimizer.make_optimizer(tx_config, total_steps, shapes["params"])
  create = jax.jit(lambda rng: step_lib.create_state(model, tx, rng,
                                                     (8, 8, 3)))
  return tx, create(jax.random.PRNGKey(seed))


@pytest.mark.slow
def test_anchors_are_their_own_group_without_weight_decay():
  model = _model("mlp")
  params = jax.jit(model.init)(jax.random.PRNGKey(0),
                               jnp.zeros((1, 8, 8, 3)))["params"]
  groups = optimizer.parameter_groups(params)
  assert groups["head"]["anchors"] == "class"
  assert groups["head"]["projection"]["kernel"] == "network"
  mask = optimizer.decay_mask(params)
  assert not mask["head"]["anchors"]
  assert mask["head"]["projection"]["kernel"]
  assert not mask["head"]["projection"]["bias"]
  for name in ("sgd", "adamw"):
    tx = optimizer.make_optimizer(_config(name=name, weight_decay=0.5), 10,
                                  params)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):  # warm-up free, so decay acts at once
      updates, state = tx.update(zero, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["head"]["anchors"],
                                  params["head"]["anchors"])
    assert not np.allclose(new["head"]["projection"]["kernel"],
                           params["head"]["projection"]["kernel"])


def test_anchor_learning_rate_multiplier_and_warmup():
  model = _model("mlp")
  params = jax.jit(model.init)(jax.random.PRNGKey(0),
                               jnp.zeros((1, 8, 8, 3)))["params"]
  ones = jax.tree.map(jnp.ones_like, params)
  tx = optimizer.make_optimizer(_config(anchor_lr_mult=0.0), 10, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  assert np.all(updates["head"]["anchors"] == 0)
  assert np.all(updates["head"]["projection"]["kernel"] != 0)
  warm = optimizer.make_optimizer(_config(warmup_steps=5), 10, params)
  updates, _ = warm.update(ones, warm.init(params), params)
  assert all(np.all(u == 0) for u in jax.tree.leaves(updates))  # lr(0) = 0


def test_loss_dispatch_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown loss 'tripplet'"):
    objective.loss_fn({"name": "tripplet"})
  with pytest.raises(ValueError, match=r"no hyperparameter\(s\) \['mining'\]"):
    objective.loss_fn({"name": "cam", "mining": "hard"})
  with pytest.raises(ValueError, match="optim.name"):
    optimizer.make_optimizer(_config(name="lamb"), 10, {})


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(losses.LOSSES))
def test_every_registered_loss_is_the_one_the_step_trains(loss):
  """The step's loss is the registry's function of the model's embeddings
  and its declared per-class parameters; its logged terms are the
  registry's; the per-class parameters learn."""
  spec = losses.get_loss(loss)
  model = models.get_model("mlp", width=32, embedding_dim=8, num_classes=4,
                           class_params=spec.class_params,
                           l2_normalize=spec.geometry == "sphere")
  tx, state = _state(model, _config())
  batch = _batch()
  params = state.params
  embeddings = jax.jit(model.apply)({"params": params}, batch["image"])
  class_params = models.class_parameters(params)
  assert {k: v.shape for k, v in class_params.items()} == {
      name: (4, 8) if shape == "matrix" else (4,)
      for name, shape in spec.class_params.items()}
  want = jax.jit(spec.fn)(embeddings, batch["label"],
                          *(class_params[name] for name in spec.class_params)
                          ).mean()
  train_step = jax.jit(step_lib.make_train_step(
      model, tx, objective.loss_fn({"name": loss, **spec.hyperparameters})))
  new_state, metrics = train_step(state, batch)
  np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)
  terms = jax.jit(spec.logged_terms)(embeddings, batch["label"], class_params)
  assert set(metrics) == {"loss", "grad_norm", *terms}
  for name, value in terms.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5)
  if spec.geometry == "sphere":
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0,
                               rtol=1e-5)
  for name, value in models.class_parameters(new_state.params).items():
    assert not np.allclose(value, class_params[name]), name
  assert int(new_state.step) == 1


def test_loss_config_sections_come_from_the_registry():
  from configs import common, validated
  for name, spec in losses.LOSSES.items():
    section = common.loss_config(name)
    assert section.to_dict() == {"name": name, "geometry": spec.geometry,
                                 **spec.hyperparameters,
                                 **validated.LOSS[name]}
    objective.spec_of(section)  # every default is accepted
  assert tuple(common.ARG_KEYS["loss"]) == tuple(losses.LOSSES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18_cifar", "vit_ti4"])
def test_8_devices_take_the_same_step_as_1(name):
  assert jax.device_count() == 8
  model = _model(name)
  if name.startswith("resnet"):
    model = tiny_models.two_stage_resnet(model)
  loss = objective.loss_fn({"name": "cam"})
  batch = _batch(16)
  results = []
  tx, initial = _state(model, _config(learning_rate=0.01, weight_decay=1e-4))
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = step_lib.data_mesh(devices)
    state = jax.device_put(jax.tree.map(np.asarray, initial),  # donated below
                           NamedSharding(mesh, P()))
    train_step = step_lib.shard_step(step_lib.make_train_step(model, tx, loss),
                                     mesh)
    losses = []
    for _ in range(3):
      state, metrics = train_step(state, step_lib.global_batch(mesh, batch))
      losses.append(float(metrics["loss"]))
    results.append((losses, state))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(results[0][1].params),
                  jax.tree.leaves(results[1][1].params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(results[0][1].batch_stats),
                  jax.tree.leaves(results[1][1].batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_attractor_warm_up_ramps_only_the_attractor():
  """train.loss_warmup_steps=W: at step s the class anchor margin loss's
  attractor weighs min(1, (s+1)/W); repeller and norm terms are unchanged;
  losses without warm-up terms refuse it."""
  rng = np.random.default_rng(0)
  e = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 0, 1, 2])
  anchors = {"anchors": jnp.asarray(rng.normal(size=(3, 4)) * 0.3,
                                    jnp.float32)}
  where = jnp.ones(6, bool)
  config = {"name": "cam", "margin": 2.0, "min_norm": 3.0}
  plain, terms = objective.loss_fn(config)(e, y, anchors, where, 0)
  assert terms["repel"] > 0 and terms["norm"] > 0  # all three terms act
  attract = losses.class_anchor_margin_loss(e, y, anchors["anchors"],
                                            margin=2.0, min_norm=3.0,
                                            attract_weight=0.0)
  warm = jax.jit(objective.loss_fn(config, warmup_steps=4))
  for step, weight in ((0, 0.25), (2, 0.75), (3, 1.0), (100, 1.0)):
    value, _ = warm(e, y, anchors, where, jnp.int32(step))
    np.testing.assert_allclose(
        value, attract + weight * (plain - attract), rtol=1e-5)
  with pytest.raises(ValueError, match="loss 'ce' has no terms to warm up"):
    objective.loss_fn({"name": "ce"}, warmup_steps=4)


def test_checkpoints_hold_the_state_without_its_neighbour_list(tmp_path):
  """Checkpoints keep the tree structure they had before TrainState had a
  neighbour list: one written then (a four-field state) restores, and the
  list is never saved."""
  import flax
  from ra_jax.training import checkpoint

  @flax.struct.dataclass
  class Before:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: tuple

  mngr = checkpoint.manager(str(tmp_path / "checkpoints"), every=1, keep=2)
  checkpoint.save(mngr, 3, Before(jnp.int32(3), {"w": jnp.ones(3)}, {},
                                  (jnp.zeros(2),)), {"position": 1})
  state = step_lib.TrainState(jnp.int32(0), {"w": jnp.zeros(3)}, {},
                              (jnp.ones(2),), neighbors=losses.build_neighbors(
                                  jnp.eye(3), 1.0, skin=0.1))
  abstract = jax.eval_shape(lambda: state.saved())
  step, saved, position = checkpoint.restore_latest(mngr, abstract)
  restored = step_lib.TrainState.from_saved(saved)
  assert (step, position, restored.neighbors) == (3, {"position": 1}, None)
  np.testing.assert_array_equal(restored.params["w"], np.ones(3))
  checkpoint.save(mngr, 4, state.saved(), {"position": 2})
  assert checkpoint.restore_latest(mngr, abstract)[0] == 4
  mngr.close()
