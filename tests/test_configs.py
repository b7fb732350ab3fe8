"""Every config file loads for both methods; presets; the paper configs demand ImageNet weights."""
import pytest

from helpers import load_config
from wsol_jax import config as config_lib
from wsol_jax.errors import ConfigError

NAMES = ('synthetic', 'cub', 'cars', 'flowers', 'tiny_imagenet', 'custom', 'openimages', 'imagenet')


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('method', ['method1', 'method2'])
def test_every_config_loads_and_validates(name, method):
    c = load_config(name, method)
    c.data.root = c.data.root or '/data'
    if c.require_pretrained:
        c.f.pretrained = c.g.pretrained = 'none'
    config_lib.validate(c)
    assert c.method == method and c.g.decoder == 'released' and c.eval.box_rule == 'normalized'


@pytest.mark.parametrize('name', ['cub', 'cars', 'flowers', 'tiny_imagenet'])
def test_paper_configs_need_imagenet_weights_or_an_explicit_none(name):
    c = load_config(name, 'method1')
    c.data.root = '/data'
    with pytest.raises(ConfigError, match=r'f\.pretrained: is empty, .*download https://download\.pytorch\.org/models/'
                                          r'resnet\d+-\w+\.pth .*--config\.f\.pretrained=none'):
        config_lib.validate(c)
    c.f.pretrained = 'none'
    with pytest.raises(ConfigError, match='g.pretrained'):
        config_lib.validate(c)
    c.g.pretrained = 'NONE'
    config_lib.validate(c)


@pytest.mark.parametrize('method', ['method1', 'method2'])
def test_custom_small_preset(method):
    c = load_config('custom', f'{method},small')
    assert c.method == method and c.data.source == 'wsolevaluation'
    assert (c.data.image_size, c.data.crop_size) == (80, 64)
    assert c.f.width == c.g.width == 0.25 and c.f.pretrained == c.g.pretrained == 'none'
    assert c.f.optimizer.name == 'adam' and c.f.epochs >= 20
    # Method II fine-tunes its Siamese f from the classifier: from scratch it would need f.epochs.
    assert (c.f.siamese_from_classifier, c.f.siamese_epochs) == ((True, 2) if method == 'method2' else (False, 0))
    # Three g epochs for Method II: a one-epoch warm-up would spend a third of them.
    assert c.g.optimizer.warmup_epochs == (0.25 if method == 'method2' else 1.0)
    assert c.g.reg_weight == (2.0 if method == 'method2' else 1.0)   # lambda: see configs/custom.py
    assert load_config('custom', method).data.crop_size == 224       # no preset: the paper's sizes


def test_unknown_preset_or_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        load_config('custom', 'method1,tiny')
    with pytest.raises(ConfigError, match='must be one of'):
        load_config('custom', 'method3,small')


def test_a_negative_selection_tolerance_is_a_config_error():
    c = load_config('synthetic', 'method1')
    assert c.eval.selection_se == 1.0
    c.eval.selection_se = -1.0
    with pytest.raises(ConfigError, match=r'^config.eval.selection_se: must be >= 0'):
        config_lib.validate(c)
    c.eval.selection_se = 0.0   # the literal maximum
    config_lib.validate(c)
