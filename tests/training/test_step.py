"""Optimizer rules, the loss dispatch and the sharded train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ra_jax import models
from ra_jax.training import objective, optimizer, step as step_lib


def _model(name="resnet18_cifar", loss="cam", **kw):
  extra = dict(width=4) if name.startswith("resnet") else dict(image_size=8)
  return models.get_model(name, embedding_dim=8, num_classes=4,
                          class_params=objective.class_params_for(loss),
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
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3)))
  tx = optimizer.make_optimizer(tx_config, total_steps, variables["params"])
  return tx, step_lib.create_state(model, tx, jax.random.PRNGKey(seed),
                                   (8, 8, 3))


def test_anchors_are_their_own_group_without_weight_decay():
  model = _model()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
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
  model = _model()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
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


@pytest.mark.parametrize("loss", list(objective.LOSSES))
def test_every_loss_trains_a_step(loss):
  config = {"name": loss}
  model = _model(loss=loss)
  tx, state = _state(model, _config())
  train_step = jax.jit(step_lib.make_train_step(model, tx,
                                                objective.loss_fn(config)))
  batch = _batch()
  for _ in range(3):
    state, metrics = train_step(state, batch)
  assert np.isfinite(metrics["loss"]) and int(state.step) == 3
  if loss == "cam":
    assert {"attract", "repel", "norm", "min_anchor_distance"} <= set(metrics)


@pytest.mark.parametrize("name", ["resnet18_cifar", "vit_ti4"])
def test_8_devices_take_the_same_step_as_1(name):
  assert jax.device_count() == 8
  model = _model(name)
  loss = objective.loss_fn({"name": "cam"})
  batch = _batch(16)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    tx, state = _state(model, _config(learning_rate=0.01, weight_decay=1e-4))
    mesh = step_lib.data_mesh(devices)
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
