"""Every config file loads for both methods; presets; the paper configs demand ImageNet weights."""

import pytest

from helpers import load_config
from wsol_jax import config as config_lib
from wsol_jax import recipes
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
    with pytest.raises(
        ConfigError,
        match=r'f\.pretrained: is empty, .*download https://download\.pytorch\.org/models/'
        r'resnet\d+-\w+\.pth .*--config\.f\.pretrained=none',
    ):
        config_lib.validate(c)
    c.f.pretrained = 'none'
    with pytest.raises(ConfigError, match='g.pretrained'):
        config_lib.validate(c)
    c.g.pretrained = 'NONE'
    config_lib.validate(c)


@pytest.mark.parametrize('method', ['method1', 'method2'])
def test_synthetic_and_the_custom_small_preset_share_one_recipe(method):
    """The synthetic config sets the data and sizes, not the optimisation: every f and g setting
    (budgets, optimisers, the recipe's additions) is the CPU recipe's; the own-data preset's too,
    with f's recipe for varied objects on top (`varied_objects`) and nothing else changed."""
    from wsol_jax.workdir import flatten

    synthetic, small = load_config('synthetic', method), load_config('custom', f'{method},small')
    recipe = recipes.from_scratch(config_lib.base_config(method))
    train = lambda c: {k: v for k, v in flatten(c).items() if k.split('.')[0] in ('f', 'g')}
    assert train(synthetic) == train(recipe)
    varied = recipes.varied_objects(recipes.from_scratch(config_lib.base_config(method)))
    assert train(small) == train(varied)
    changed = {k for k, v in train(varied).items() if train(recipe)[k] != v}
    assert changed == {'f.label_smoothing', 'f.scale_jitter', 'f.colour_jitter', 'f.min_images', 'f.max_epochs'} | {
        'f.arch',
        'f.optimizer.name',
        'f.optimizer.weight_decay',
        'g.reg_weight',
    }
    assert (small.f.optimizer.name, small.f.min_images, small.data.flip) == ('adamw', 120_000, True)
    assert small.f.arch == 'resnet18_small' and synthetic.f.arch == 'resnet18' and small.g.depth == 'resnet18'
    assert (synthetic.g.reg_weight, small.g.reg_weight) == (1.0, 4.0)
    assert small.data.source == 'wsolevaluation' and (small.data.image_size, small.data.crop_size) == (80, 64)
    assert small.f.pretrained == small.g.pretrained == 'none' and small.f.patience > 0 and small.g.patience > 0
    assert load_config('custom', method).data.crop_size == 224  # no preset: the paper's sizes
    paper = load_config('cub', method)  # the paper's fixed budgets
    assert (paper.f.max_epochs, paper.f.patience, paper.g.max_epochs, paper.g.patience) == (200, 0, 100, 0)
    assert recipe.f.erase_prob == 0.5 and paper.f.erase_prob == 0  # the paper's f sees no erasing
    # the paper's g starts at 0.5 whatever f does; the recipe's where f still answers (train/start.py)
    assert recipe.g.start_agreement == 0.9 and paper.g.start_agreement == 0 and paper.g.initial_weight == 0.5
    # the recipe scores and keeps a moving average of g's weights; the paper, the weights themselves
    assert recipe.g.ema_decay == 0.98 and paper.g.ema_decay == 0


def test_both_methods_train_g_with_one_optimiser_from_the_untrained_map():
    """The recipe's g differs between the methods only in what an example is (16 triplets are 48
    images a step, against 32 images)."""
    m1, m2 = (recipes.from_scratch(config_lib.base_config(m)) for m in ('method1', 'method2'))
    assert m1.g.optimizer.to_dict() == m2.g.optimizer.to_dict()
    assert m1.g.initial_weight == m2.g.initial_weight == config_lib.base_config('method1').g.initial_weight
    differ = {k for k in m1.g.keys() if m1.g[k] != m2.g[k]}
    assert differ == {'batch_size'} and 3 * m2.g.batch_size > m1.g.batch_size


@pytest.mark.parametrize('method', ['method1', 'method2'])
def test_the_synthetic_vit_preset_changes_only_the_architecture_of_f_and_its_erasing(method):
    """`synthetic.py:method1,vit`: the same data, sizes and recipe with a ViT f whose position
    grid is the 64 px images' patch grid (no resampled embeddings), 48 wide at the recipe's width,
    trained without random erasing."""
    import jax
    import jax.numpy as jnp
    from wsol_jax.models import registry
    from wsol_jax.workdir import flatten

    plain, vit = flatten(load_config('synthetic', method)), flatten(load_config('synthetic', f'{method},vit'))
    assert {k for k in plain if plain[k] != vit[k]} == {'f.arch', 'f.erase_prob'}
    assert vit['f.arch'] == 'vit_cpu8' and vit['f.erase_prob'] == 0
    c = load_config('synthetic', f'{method},vit')
    config_lib.validate(c)
    options = registry.ARCHS[c.f.arch].options
    assert options['patch_size'] * options['pos_grid'] == c.data.crop_size == 64 and not registry.has_cam(c.f.arch)
    pooled = jax.eval_shape(
        lambda x: registry.build(c.f.arch, c.f.width).init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
    )
    assert pooled.shape == (2, 48) == (2, registry.feature_dim(c.f.arch, c.f.width))


def test_unknown_preset_or_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        load_config('custom', 'method1,tiny')
    with pytest.raises(ConfigError, match=r"unknown preset 'vits' in 'method1,vits'; presets: \('vit', 'tiny'\)"):
        load_config('synthetic', 'method1,vits')
    with pytest.raises(ConfigError, match='must be one of'):
        load_config('custom', 'method3,small')


def test_a_negative_selection_tolerance_is_a_config_error():
    c = load_config('synthetic', 'method1')
    assert c.eval.selection_se == 1.0
    c.eval.selection_se = -1.0
    with pytest.raises(ConfigError, match=r'^config.eval.selection_se: must be >= 0'):
        config_lib.validate(c)
    c.eval.selection_se = 0.0  # the literal maximum
    config_lib.validate(c)


@pytest.mark.parametrize('method', ['method1', 'method2'])
def test_the_pretrained_preset_is_the_small_preset_with_full_width_imagenet_resnets(method):
    """`custom.py:<method>,small,pretrained`: full-width ResNet-18s for f and g, which must start
    from the ImageNet file the check names; f fine-tuned at the paper's SGD rate; the rest is the
    small preset's."""
    from wsol_jax.workdir import flatten

    c = load_config('custom', f'{method},small,pretrained')
    c.data.root = '/data/mine'
    with pytest.raises(ConfigError, match=r'config.f.pretrained: is empty.*resnet18-f37072fd\.pth'):
        config_lib.validate(c)
    c.f.pretrained = c.g.pretrained = '/weights/resnet18-f37072fd.pth'
    config_lib.validate(c)
    assert (c.f.arch, c.f.width, c.g.depth, c.g.width) == ('resnet18', 1.0, 'resnet18', 1.0)
    assert (c.f.optimizer.name, c.f.optimizer.learning_rate) == ('sgd', 1e-3)
    small = flatten(load_config('custom', f'{method},small'))
    small['data.root'] = c.data.root
    changed = {k for k, v in flatten(c).items() if small[k] != v}
    # ImageNet features need no long start: f's patience may stop it at any time
    assert (c.f.min_images, c.f.max_epochs) == (0, 30)
    assert changed == {'require_pretrained', 'f.arch', 'f.width', 'g.width', 'f.pretrained', 'g.pretrained'} | {
        'f.min_images',
        'f.max_epochs',
    } | {f'f.optimizer.{k}' for k in ('name', 'learning_rate', 'weight_decay')}


@pytest.mark.parametrize('value', [-0.1, 1.5])
def test_a_start_agreement_outside_the_unit_interval_is_a_config_error(value):
    c = load_config('synthetic', 'method1')
    c.g.start_agreement = value
    with pytest.raises(ConfigError, match=r'^config.g.start_agreement: must be in \[0, 1\]'):
        config_lib.validate(c)


def test_f_from_a_file_is_an_encoder_with_its_weights():
    c = load_config('synthetic', 'method1')
    c.f.train = False
    with pytest.raises(
        ConfigError, match=r'config.f.train: False uses f.pretrained as an encoder: set --config.f.kind=encoder'
    ):
        config_lib.validate(c)
    c.f.kind = 'encoder'
    with pytest.raises(ConfigError, match=r'config.f.pretrained: must name the weight file'):
        config_lib.validate(c)
    c.f.pretrained = '/weights/dino_deitsmall16_pretrain.pth'
    config_lib.validate(c)
    c.f.arch = 'vit_tiny'
    with pytest.raises(ConfigError, match=r'config.f.arch: must be one of resnet18, .*vit_s16'):
        config_lib.validate(c)
    c.f.arch, c.data.crop_size, c.data.image_size = 'vit_tiny_test', 36, 36  # patch 8
    with pytest.raises(ConfigError, match=r'config.data.crop_size: must be divisible by the patch size 8 of f.arch'):
        config_lib.validate(c)
