"""Every loss, described once: what the trainer, the configs, the grid and the
report need to know about it.

A `LossSpec` holds the loss function, the per-class parameters it trains
(their names are the function's positional parameters after `embeddings`
and `labels`), its hyperparameters (the function's keyword-only parameters,
defaults read from the signature), the geometry its embeddings live in, and
the scalars it logs. Adding a loss is one module with its function and one
`LossSpec(...)` line in `LOSSES` below; the config section, the allowed
`loss=` values, the train step's dispatch, the results grid and the report's
names all derive from it.
"""

import dataclasses
import inspect
from typing import Any, Callable, Literal, Mapping, Optional

import jax

from ra_jax.losses.class_anchor_margin import class_anchor_margin_loss
from ra_jax.losses.class_anchor_margin import class_anchor_margin_terms
from ra_jax.losses.class_anchor_margin import resolved_margin
from ra_jax.losses.classification import arcface_loss
from ra_jax.losses.classification import center_loss
from ra_jax.losses.classification import softmax_cross_entropy_loss
from ra_jax.losses.contrastive import contrastive_loss
from ra_jax.losses.proxy_anchor import proxy_anchor_loss
from ra_jax.losses.triplet import triplet_loss

# "l2": ranked by L2 distance between raw embeddings; "sphere": embeddings
# are projected onto the unit sphere (cosine geometry) before the loss and
# before every search.
Geometry = Literal["l2", "sphere"]
GEOMETRIES = ("l2", "sphere")
# Keyword-only arguments of every loss that are not hyperparameters.
_NOT_HYPERPARAMETERS = ("where", "checks", "neighbors")
# Shape of a per-class parameter: (C, D) or (C,).
ClassParamShape = Literal["matrix", "vector"]


@dataclasses.dataclass(frozen=True)
class StageOne:
  """A loss's class vectors as stage 1 of two-stage search (and a
  classifier: the best class of an embedding), as
  `ra_jax.retrieval.ClassVectors` scores them.

  Attributes:
    param: the per-class (C, D) parameter holding one vector per class.
    score: "l2" (the nearest vector; the parameter then serves as class
      anchors), "cosine" (the highest cosine) or "logit" (the highest
      v_c . e + b_c).
    bias: the (C,) parameter b of a "logit" score.
  """
  param: str
  score: Literal["l2", "cosine", "logit"] = "l2"
  bias: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Repeller:
  """A loss's repeller between class vectors, which a neighbour list
  (`ra_jax.losses.build_neighbors`) can serve: the loss's `fn` takes
  ``neighbors=``.

  Attributes:
    param: the (C, D) class parameter it repels.
    margin: (hyperparameters, embedding dim) -> m; pairs closer than 2m
      are pushed apart.
  """
  param: str
  margin: Callable[[Mapping[str, Any], int], float]


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """One loss, as the rest of ra_jax sees it.

  Attributes:
    name: the config value (`loss.name`, `--config configs/x.py:loss=NAME`).
    title: its full name in reports and tables.
    fn: the per-example loss, `fn(embeddings, labels, *class_params, *,
      hyperparameters..., where=None) -> (B,)`.
    class_params: per-class parameter name -> "matrix" (C, D) or "vector"
      (C,), in the order `fn` takes them; the model's head creates them.
    geometry: "l2" or "sphere" (see GEOMETRIES), the default.
    geometries: the geometries a run may choose (`loss.geometry` in its
      config); empty: `geometry` only.
    needs_positives: in-batch pair/triplet mining, so batches must hold
      several images of each class (class-balanced batches).
    terms: optional `terms(embeddings, labels, *class_params, **hp, where=)`
      -> {name: scalar}, logged every `log_every` steps (no gradient).
    progress: the terms the progress bar shows next to the loss.
    stage_one: the loss's class vectors and their score (`StageOne`), or
      None for a loss without per-class vectors.
    shown: hyperparameters a label always names, even at their default.
    warmup: weight hyperparameters the trainer may ramp linearly from 0 to
      their value over the first steps (`train.loss_warmup_steps`).
    repeller: the repeller a neighbour list can serve (`Repeller`), or None.
  """
  name: str
  title: str
  fn: Callable[..., jax.Array]
  class_params: Mapping[str, ClassParamShape] = dataclasses.field(
      default_factory=dict)
  geometry: Geometry = "l2"
  geometries: tuple[Geometry, ...] = ()
  needs_positives: bool = False
  terms: Optional[Callable[..., dict[str, jax.Array]]] = None
  progress: tuple[str, ...] = ()
  stage_one: Optional[StageOne] = None
  shown: tuple[str, ...] = ()
  warmup: tuple[str, ...] = ()
  repeller: Optional[Repeller] = None

  def __post_init__(self):
    positional = [p.name for p in inspect.signature(self.fn).parameters.values()
                  if p.kind == p.POSITIONAL_OR_KEYWORD][2:]
    if positional != list(self.class_params):
      raise ValueError(f"loss {self.name!r}: class_params"
                       f" {list(self.class_params)} must name {self.fn.__name__}"
                       f"'s per-class arguments {positional}, in order")
    for geometry in (self.geometry, *self.geometries):
      if geometry not in GEOMETRIES:
        raise ValueError(f"loss {self.name!r}: geometry must be one of"
                         f" {GEOMETRIES}, got {geometry!r}")
    if self.geometries and self.geometry not in self.geometries:
      raise ValueError(f"loss {self.name!r}: its default geometry"
                       f" {self.geometry!r} is not one of {self.geometries}")
    if self.stage_one is not None:
      named = {self.stage_one.param: "matrix"}
      if self.stage_one.bias is not None:
        named[self.stage_one.bias] = "vector"
      for param, shape in named.items():
        if self.class_params.get(param) != shape:
          raise ValueError(f"loss {self.name!r}: stage_one names {param!r},"
                           f" which is not one of its class_params of shape"
                           f" {shape}")
      if (self.stage_one.bias is not None) != (
          self.stage_one.score == "logit"):
        raise ValueError(f"loss {self.name!r}: a bias goes with a logit"
                         " score, and only with it")
    if self.repeller is not None and (
        self.class_params.get(self.repeller.param) != "matrix" or
        "neighbors" not in inspect.signature(self.fn).parameters):
      raise ValueError(f"loss {self.name!r}: its repeller needs a (C, D)"
                       f" class parameter {self.repeller.param!r} and"
                       f" {self.fn.__name__}(neighbors=...)")
    unknown = sorted(set(self.warmup) - set(self.hyperparameters))
    if unknown:
      raise ValueError(f"loss {self.name!r}: warmup names {unknown}, which"
                       " are not hyperparameters of it")

  @property
  def anchors(self) -> Optional[str]:
    """The class parameter that serves as class anchors (stage 1 by L2:
    nearest-anchor accuracy, the search index's lists), or None."""
    if self.stage_one is not None and self.stage_one.score == "l2":
      return self.stage_one.param
    return None

  @property
  def hyperparameters(self) -> dict[str, Any]:
    """name -> default, from the signature of `fn`."""
    return {p.name: p.default
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in _NOT_HYPERPARAMETERS}

  @property
  def allowed_geometries(self) -> tuple[Geometry, ...]:
    """The geometries a run of this loss may choose."""
    return self.geometries or (self.geometry,)

  def resolve_geometry(self, geometry: Optional[str] = None) -> Geometry:
    """The geometry a run trains, evaluates and searches in: `geometry`
    (None: the default) if this loss allows it, else a ValueError."""
    if geometry is None:
      return self.geometry
    if geometry not in self.allowed_geometries:
      raise ValueError(f"loss {self.name!r}: geometry {geometry!r} is not"
                       f" one it allows"
                       f" ({', '.join(self.allowed_geometries)})")
    return geometry

  def check_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
    """A ValueError naming the unknown names, if any."""
    unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
    if unknown:
      raise ValueError(
          f"loss {self.name!r} has no hyperparameter(s) {unknown}; it takes:"
          f" {', '.join(self.hyperparameters) or 'none'}")

  def __call__(self, embeddings: jax.Array, labels: jax.Array,
               class_params: Mapping[str, jax.Array],
               where: Optional[jax.Array] = None, *, checks: bool = False,
               neighbors=None, **hyperparameters) -> jax.Array:
    """The per-example loss (B,), class parameters taken by name;
    `neighbors` is the repeller's neighbour list (see `repeller`)."""
    self.check_hyperparameters(hyperparameters)
    return self.fn(embeddings, labels,
                   *(class_params[name] for name in self.class_params),
                   where=where, checks=checks,
                   **self._neighbors(neighbors), **hyperparameters)

  def _neighbors(self, neighbors) -> dict[str, Any]:
    if neighbors is None:
      return {}
    if self.repeller is None:
      raise ValueError(f"loss {self.name!r} has no repeller for a"
                       " neighbour list to serve")
    return {"neighbors": neighbors}

  def logged_terms(self, embeddings: jax.Array, labels: jax.Array,
                   class_params: Mapping[str, jax.Array],
                   where: Optional[jax.Array] = None, *, neighbors=None,
                   **hyperparameters) -> dict[str, jax.Array]:
    """`terms` (empty without) with no gradient flowing through them; the
    hyperparameters `terms` does not take are left out."""
    if self.terms is None:
      return {}
    taken = inspect.signature(self.terms).parameters
    frozen = jax.lax.stop_gradient((embeddings, dict(class_params)))
    return self.terms(frozen[0], labels,
                      *(frozen[1][name] for name in self.class_params),
                      where=where, **self._neighbors(neighbors),
                      **{k: v for k, v in hyperparameters.items()
                         if k in taken})

  def describe(self, hyperparameters: Mapping[str, Any]) -> str:
    """The title, with the hyperparameters that differ from the defaults
    (and those in `shown`) and a geometry other than the default:
    "triplet (mining=hard, geometry=l2)"."""
    defaults = self.hyperparameters
    named = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in hyperparameters.items()
             if k in defaults and (k in self.shown or v != defaults[k])]
    geometry = hyperparameters.get("geometry")
    if geometry and geometry != self.geometry:
      named.append(f"geometry={geometry}")
    return f"{self.title} ({', '.join(named)})" if named else self.title


def _registry(*specs: LossSpec) -> dict[str, LossSpec]:
  return {spec.name: spec for spec in specs}


LOSSES: dict[str, LossSpec] = _registry(
    LossSpec("cam", "class anchor margin", class_anchor_margin_loss,
             {"anchors": "matrix"}, terms=class_anchor_margin_terms,
             progress=("attract", "repel", "norm"),
             stage_one=StageOne("anchors"), warmup=("attract_weight",),
             repeller=Repeller("anchors", lambda hyperparameters, dim:
                               resolved_margin(hyperparameters.get("margin"),
                                               dim))),
    LossSpec("ce", "cross-entropy", softmax_cross_entropy_loss,
             {"kernel": "matrix", "bias": "vector"},
             stage_one=StageOne("kernel", "logit", "bias")),
    LossSpec("center", "center loss", center_loss,
             {"centers": "matrix", "kernel": "matrix", "bias": "vector"},
             stage_one=StageOne("centers")),
    LossSpec("arcface", "ArcFace", arcface_loss, {"weights": "matrix"},
             geometry="sphere", stage_one=StageOne("weights", "cosine")),
    LossSpec("proxy_anchor", "proxy-anchor", proxy_anchor_loss,
             {"proxies": "matrix"}, geometry="sphere",
             stage_one=StageOne("proxies", "cosine")),
    # Pair and triplet losses: on the unit sphere as in the metric-learning
    # literature (FaceNet, Musgrave et al. 2020), raw L2 on request.
    LossSpec("contrastive", "contrastive", contrastive_loss,
             geometry="sphere", geometries=("sphere", "l2"),
             needs_positives=True),
    LossSpec("triplet", "triplet", triplet_loss, geometry="sphere",
             geometries=("sphere", "l2"), needs_positives=True,
             shown=("mining",)),
)


def get_loss(name: str) -> LossSpec:
  """The registered loss called `name`; an error lists the known names."""
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
  return LOSSES[name]


def loss_names() -> tuple[str, ...]:
  return tuple(LOSSES)
