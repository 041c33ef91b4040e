"""The loss registry: each entry agrees with its function, and everything
else derives from it."""

import jax.numpy as jnp
import numpy as np
import pytest

from ra_jax import losses


def test_hyperparameters_are_read_from_the_signature():
  cam = losses.get_loss("cam")
  assert cam.hyperparameters == {"margin": None, "min_norm": None,
                                 "repel_weight": 1.0, "norm_weight": 1.0,
                                 "attract_weight": 1.0, "push_weight": 0.0}
  assert cam.warmup == ("attract_weight",)
  assert losses.get_loss("ce").hyperparameters == {}
  assert losses.get_loss("triplet").hyperparameters["mining"] == "semi_hard"


def test_every_entry_names_its_functions_class_parameters_in_order():
  for spec in losses.LOSSES.values():
    assert spec.geometry in ("l2", "sphere")
    assert all(shape in ("matrix", "vector")
               for shape in spec.class_params.values())
  assert list(losses.get_loss("center").class_params) == [
      "centers", "kernel", "bias"]
  with pytest.raises(ValueError, match=r"must name center_loss's per-class"
                     r" arguments \['centers', 'kernel', 'bias'\]"):
    losses.LossSpec("bad", "bad", losses.center_loss, {"kernel": "matrix"})
  with pytest.raises(ValueError, match="geometry must be one of"):
    losses.LossSpec("bad", "bad", losses.contrastive_loss, geometry="cos")
  with pytest.raises(ValueError, match="default geometry 'l2' is not one"):
    losses.LossSpec("bad", "bad", losses.contrastive_loss,
                    geometries=("sphere",))


def test_geometry_choices():
  """Pair and triplet losses default to the sphere and allow raw L2; the
  others have one geometry."""
  for name in ("triplet", "contrastive"):
    spec = losses.get_loss(name)
    assert spec.resolve_geometry() == "sphere"
    assert spec.resolve_geometry("l2") == "l2"
  assert losses.get_loss("arcface").resolve_geometry() == "sphere"
  assert losses.get_loss("cam").resolve_geometry("l2") == "l2"
  with pytest.raises(ValueError, match="geometry 'sphere' is not one it"
                     r" allows \(l2\)"):
    losses.get_loss("cam").resolve_geometry("sphere")
  with pytest.raises(ValueError, match="stage_one names 'centers'"):
    losses.LossSpec("bad", "bad", losses.proxy_anchor_loss,
                    {"proxies": "matrix"},
                    stage_one=losses.StageOne("centers"))


def test_class_vectors_of_every_loss_that_has_them():
  """Stage 1 of two-stage search (and the anchors where it is by L2), as
  `retrieval.ClassVectors` scores them."""
  from ra_jax import retrieval
  stage_one = {name: spec.stage_one for name, spec in losses.LOSSES.items()}
  assert stage_one["cam"] == losses.StageOne("anchors", "l2")
  assert stage_one["ce"] == losses.StageOne("kernel", "logit", "bias")
  assert stage_one["center"] == losses.StageOne("centers", "l2")
  assert stage_one["arcface"] == losses.StageOne("weights", "cosine")
  assert stage_one["proxy_anchor"] == losses.StageOne("proxies", "cosine")
  assert stage_one["triplet"] is stage_one["contrastive"] is None
  assert {s.score for s in stage_one.values() if s} <= set(retrieval.SCORES)
  assert [n for n, s in losses.LOSSES.items() if s.anchors] == ["cam",
                                                                "center"]
  with pytest.raises(ValueError, match="a bias goes with a logit score"):
    losses.LossSpec("bad", "bad", losses.softmax_cross_entropy_loss,
                    {"kernel": "matrix", "bias": "vector"},
                    stage_one=losses.StageOne("kernel", "l2", "bias"))


def test_calling_an_entry_passes_class_parameters_by_name():
  rng = np.random.default_rng(0)
  e = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 0, 1, 2])
  params = {"bias": jnp.arange(3.0), "kernel": jnp.ones((3, 3)),
            "centers": jnp.zeros((3, 3))}
  got = losses.get_loss("center")(e, y, params, center_weight=0.5)
  want = losses.center_loss(e, y, params["centers"], params["kernel"],
                            params["bias"], center_weight=0.5)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"'center' has no hyperparameter\(s\)"
                     r" \['margin'\]; it takes: center_weight"):
    losses.get_loss("center")(e, y, params, margin=1.0)
  with pytest.raises(ValueError, match="unknown loss 'arc'; known: cam, ce"):
    losses.get_loss("arc")


def test_logged_terms_carry_no_gradient_and_skip_other_hyperparameters():
  import jax
  spec = losses.get_loss("cam")
  e = jnp.ones((2, 2))
  anchors = {"anchors": jnp.asarray([[0.0, 0.0], [3.0, 0.0]])}

  def attract(e):
    return spec.logged_terms(e, jnp.asarray([0, 1]), anchors,
                             repel_weight=2.0, margin=1.0)["attract"]
  assert float(attract(e)) > 0
  np.testing.assert_array_equal(jax.grad(attract)(e), 0.0)
  assert losses.get_loss("ce").logged_terms(e, jnp.asarray([0, 1]), {}) == {}


def test_labels_name_losses_in_full_with_their_non_defaults():
  assert losses.get_loss("ce").describe({}) == "cross-entropy"
  cam = losses.get_loss("cam")
  assert cam.describe(cam.hyperparameters) == "class anchor margin"
  assert cam.describe({**cam.hyperparameters, "margin": 2.0}) == (
      "class anchor margin (margin=2)")
  assert cam.describe({"margin": 2.7182818, "geometry": "l2"}) == (
      "class anchor margin (margin=2.72)")  # 3 significant digits
  assert losses.get_loss("triplet").describe(
      {"mining": "hard", "geometry": "l2"}) == (
          "triplet (mining=hard, geometry=l2)")
  triplet = losses.get_loss("triplet")
  assert triplet.describe({"margin": triplet.hyperparameters["margin"],
                           "mining": "hard"}) == (
      "triplet (mining=hard)")
  assert triplet.describe(triplet.hyperparameters) == (
      "triplet (mining=semi_hard)")
