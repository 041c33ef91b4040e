"""Backbones, the embedding head and the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ra_jax import losses
from ra_jax import models
from tests import tiny_models


def _abstract_variables(module, size):
  return jax.eval_shape(module.init, jax.random.PRNGKey(0),
                        jnp.zeros((1, size, size, 3)))


def _num_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,size,expected", [
    ("resnet18", 224, 11_689_512),
    ("resnet50", 224, 25_557_032),
    ("vit_b16", 224, 86_567_656),
    ("vit_s16", 224, 22_050_664),
    ("vit_ti16", 224, 5_717_416),
])
def test_parameter_counts_equal_the_reference_architectures(
    name, size, expected):
  backbone = models.get_backbone(name, num_classes=1000)
  assert _num_params(_abstract_variables(backbone, size)) == expected


@pytest.mark.parametrize("name,size,features", [
    ("resnet18", 64, 512), ("resnet34", 224, 512), ("resnet50", 64, 2048),
    ("resnet18_cifar", 32, 512), ("resnet50_cifar", 32, 2048),
    ("vit_ti16", 224, 192), ("vit_s8", 64, 384), ("vit_s4", 32, 384),
    ("vit_b16", 224, 768),
])
def test_output_shapes(name, size, features):
  model = models.get_model(name, embedding_dim=24, num_classes=7,
                           class_params={"anchors": "matrix",
                                         "kernel": "matrix", "bias": "vector"})
  variables = _abstract_variables(model, size)
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, size, size, 3))),
                       variables)
  assert out.shape == (2, 24)
  head = variables["params"]["head"]
  assert head["projection"]["kernel"].shape == (features, 24)
  assert head["anchors"].shape == head["kernel"].shape == (7, 24)
  assert head["bias"].shape == (7,)


def test_per_class_parameters_are_declared_not_guessed():
  assert models.class_param_shapes(("anchors",)) == (("anchors", "matrix"),)
  assert models.class_param_shapes({"bias": "vector"}) == (("bias", "vector"),)
  with pytest.raises(ValueError, match="'bias': shape must be 'matrix' or"
                     " 'vector', got 'row'"):
    models.class_param_shapes({"bias": "row"})
  with pytest.raises(ValueError, match="'projection' is taken by the head"):
    models.class_param_shapes(("projection",))
  assert models.is_class_parameter(("head", "bias"))
  assert not models.is_class_parameter(("head", "projection"))
  assert not models.is_class_parameter(("backbone", "bias"))


def _tiny_resnet():
  return models.get_model("resnet18_cifar", width=8, embedding_dim=16,
                          num_classes=5)


@pytest.mark.slow
def test_batchnorm_uses_batch_statistics_in_training_only():
  model = tiny_models.two_stage_resnet(_tiny_resnet())
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3)) * 3 + 1
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  evaluate = jax.jit(model.apply)  # one compilation, not one per op
  train = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                           mutable=["batch_stats"]))
  eval_out = evaluate(variables, x)
  train_out, updates = train(variables, x)
  assert not np.allclose(eval_out, train_out, atol=1e-3)
  before = variables["batch_stats"]["backbone"]["bn1"]["mean"]
  after = updates["batch_stats"]["backbone"]["bn1"]["mean"]
  assert not np.allclose(before, after)
  # Eval mode is per-example: an example's output ignores the rest of the
  # batch; train mode is not.
  np.testing.assert_allclose(evaluate(variables, x[:1]), eval_out[:1],
                             rtol=1e-4, atol=1e-5)
  one, _ = train(variables, x[:2])
  assert not np.allclose(one[:1], train_out[:1], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet18_cifar", 32), ("vit_ti4", 32)])
def test_same_seed_same_model(name, size):
  kw = dict(width=8) if name.startswith("resnet") else dict(depth=2)
  model = models.get_model(name, embedding_dim=8, num_classes=3, **kw)
  x = jnp.ones((2, size, size, 3))
  init = jax.jit(model.init)  # one compilation for the three
  a = init(jax.random.PRNGKey(3), x)
  b = init(jax.random.PRNGKey(3), x)
  c = init(jax.random.PRNGKey(4), x)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(u, v)
  assert not np.allclose(a["params"]["head"]["anchors"],
                         c["params"]["head"]["anchors"])


@pytest.mark.slow
def test_jitted_train_step_with_the_class_anchor_margin_loss():
  model = _tiny_resnet()
  key = jax.random.PRNGKey(0)
  images = jax.random.normal(key, (10, 32, 32, 3))
  labels = jnp.arange(10) % 5
  variables = jax.jit(model.init)(key, images)
  params, stats = variables["params"], variables["batch_stats"]
  # Plain gradient descent: the repeller can dominate the first loss (at
  # the validated margin 6.46, 2m ~ 13 against 16-d N(0, 1) anchors ~5.7
  # apart; at the default sqrt(D/2), 2m ~ 5.7, about half the pairs), and SGD
  # with momentum 0.9 at 0.05 oscillated into divergence on one CPU model
  # while passing on another; at 0.01 without momentum the loss falls
  # monotonically to ~0.07 of its start for every key tried (0-3).
  tx = optax.sgd(0.01)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(params):
      emb, updates = model.apply({"params": params, "batch_stats": stats},
                                 images, train=True, mutable=["batch_stats"])
      anchors = models.class_parameters(params)["anchors"]
      return losses.class_anchor_margin_loss(emb, labels, anchors).mean(), (
          updates["batch_stats"])
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  first = None
  for _ in range(15):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    first = loss if first is None else first
  assert np.isfinite(loss) and loss < 0.5 * first


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet18_cifar", 32), ("vit_ti4", 32)])
def test_bfloat16_forward(name, size):
  # Two ViT blocks: every block is the same module; 12 compiled three
  # times took 14 s.
  kw = dict(width=8) if name.startswith("resnet") else dict(depth=2)
  model = models.get_model(name, embedding_dim=8, num_classes=3,
                           dtype=jnp.bfloat16, **kw)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out = jax.jit(model.apply)(variables, x)
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(out))
  full = models.get_model(name, embedding_dim=8, num_classes=3, **kw)
  np.testing.assert_allclose(out.astype(jnp.float32),
                             jax.jit(full.apply)(variables, x),
                             rtol=0.1, atol=0.1)


@pytest.mark.slow
def test_vit_position_embeddings_follow_the_image_size():
  model = models.get_backbone("vit_ti8", image_size=32, depth=1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  jnp.zeros((1, 32, 32, 3)))
  assert variables["params"]["pos_embed"].shape == (1, 17, 192)
  bigger = jax.jit(model.apply)(variables,
                                jnp.zeros((1, 64, 64, 3)))  # 8x8 grid
  assert bigger.shape == (1, 192)
  pos = variables["params"]["pos_embed"]
  resized = models.interpolate_pos_embed(pos, (8, 8))
  assert resized.shape == (1, 65, 192)
  np.testing.assert_array_equal(resized[:, 0], pos[:, 0])  # class token kept


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError, match="resnet18_cifar.*vit_s16"):
    models.get_model("resnet19", embedding_dim=4, num_classes=2)
  with pytest.raises(ValueError, match="image_size"):
    models.get_backbone("vit_s7")
  with pytest.raises(ValueError, match="per-class parameter 'centres'"):
    models.get_model("resnet18_cifar", width=8, embedding_dim=4, num_classes=2,
                     class_params={"centres": "tensor"})


def test_orthogonal_anchors_start_exactly_separated():
  """anchor_init="orthogonal": every class matrix has orthogonal rows of
  norm scale*sqrt(D), so anchors are exactly scale*sqrt(2D) apart."""
  model = models.get_model("mlp", width=8, embedding_dim=16, num_classes=5,
                           class_params=("anchors",), anchor_init="orthogonal",
                           anchor_init_scale=0.5)
  anchors = np.asarray(model.init(jax.random.PRNGKey(3), jnp.zeros(
      (1, 4, 4, 1)))["params"]["head"]["anchors"], np.float64)
  np.testing.assert_allclose(np.linalg.norm(anchors, axis=1), 0.5 * 4.0,
                             rtol=1e-5)
  gram = anchors @ anchors.T
  np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-5)
  normal = models.get_model("mlp", width=8, embedding_dim=16, num_classes=5,
                            class_params=("anchors",))
  drawn = np.asarray(normal.init(jax.random.PRNGKey(3), jnp.zeros(
      (1, 4, 4, 1)))["params"]["head"]["anchors"])
  assert not np.allclose(np.linalg.norm(drawn, axis=1), 4.0, rtol=1e-3)
  too_many = models.get_model("mlp", width=8, embedding_dim=4, num_classes=5,
                              class_params=("anchors",),
                              anchor_init="orthogonal")
  with pytest.raises(ValueError, match=r"at most as many classes \(5\) as"
                     r" embedding dimensions \(4\)"):
    too_many.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="anchor_init must be 'normal',"
                     " 'orthogonal' or 'imprinted', got 'simplex'"):
    models.get_model("mlp", width=8, embedding_dim=16, num_classes=5,
                     anchor_init="simplex").init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, 4, 4, 1)))
