"""Flax Linen modules: the ResNet backbones, the frozen network `f` and the weight-map network `g`."""
from wsol_jax.models.classifier import Classifier
from wsol_jax.models.resnet import RESNET_SPECS, ResNet, stage_channels
from wsol_jax.models.weight_map import WeightMapNet

__all__ = ['Classifier', 'RESNET_SPECS', 'ResNet', 'WeightMapNet', 'stage_channels']
