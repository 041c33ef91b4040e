"""Flax backbones (ResNet, ViT), the embedding head with class anchors, a name
registry and pretrained-weight import. Imports nothing from the trainer."""

from ra_jax.models.head import class_param_shapes
from ra_jax.models.head import class_parameters
from ra_jax.models.head import EmbeddingHead
from ra_jax.models.head import is_class_parameter
from ra_jax.models.head import RetrievalModel
from ra_jax.models.imprint import imprinted_class_vectors
from ra_jax.models.pretrained import adapt_input_channels
from ra_jax.models.pretrained import load_pretrained
from ra_jax.models.pretrained import with_pretrained_backbone
from ra_jax.models.registry import backbone_options
from ra_jax.models.registry import get_backbone
from ra_jax.models.registry import get_model
from ra_jax.models.registry import model_names
from ra_jax.models.resnet import ResNet
from ra_jax.models.vit import interpolate_pos_embed
from ra_jax.models.vit import ViT

__all__ = [
    "adapt_input_channels", "backbone_options", "EmbeddingHead", "ResNet",
    "RetrievalModel", "ViT", "class_param_shapes", "class_parameters",
    "is_class_parameter", "get_backbone", "get_model",
    "imprinted_class_vectors", "interpolate_pos_embed", "load_pretrained", "model_names",
    "with_pretrained_backbone",
]
