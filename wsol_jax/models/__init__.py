"""Flax Linen modules: the backbones (ResNet, ViT, ConvNeXt), the frozen network `f` and the weight-map network `g`."""

from wsol_jax.models.classifier import Classifier
from wsol_jax.models.convnext import ConvNeXt
from wsol_jax.models.registry import ARCHS
from wsol_jax.models.resnet import RESNET_SPECS, ResNet, stage_channels
from wsol_jax.models.vit import ViT
from wsol_jax.models.weight_map import WeightMapNet

__all__ = ['ARCHS', 'Classifier', 'ConvNeXt', 'RESNET_SPECS', 'ResNet', 'ViT', 'WeightMapNet', 'stage_channels']
