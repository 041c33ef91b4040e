"""Smaller versions of the real models, for tests about something else than
the model's depth (sharding, BatchNorm modes, export)."""

from ra_jax import models


def two_stage_resnet(model: models.RetrievalModel) -> models.RetrievalModel:
  """`model` (a ResNet retrieval model) with two one-block stages: every
  layer kind of ResNet-18 (stem, BatchNorm, a strided stage with a
  projection shortcut) in about half its compile time."""
  return model.clone(backbone=model.backbone.clone(stage_sizes=(1, 1)))
