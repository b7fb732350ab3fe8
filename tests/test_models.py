"""The ResNets match torchvision's structure; g's output shape and range; bf16 parity."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import BF16_LAYERS, bf16_tolerance
from wsol_jax.models import Classifier, ResNet, WeightMapNet, stage_channels
from wsol_jax.models.norm import BatchNorm

# Parameter counts of torchvision.models.resnetXX(num_classes=1000) (as printed by torchvision).
TORCHVISION_PARAMS = {'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032, 'resnet101': 44_549_160}


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
def test_classifier_parameter_count_matches_torchvision(depth):
    model = Classifier(1000, depth)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert _count(shapes['params']) == TORCHVISION_PARAMS[depth]
    # BatchNorm running mean and variance: one pair per BatchNorm scale vector, as torchvision's buffers.
    scales = [
        v
        for k, v in jax.tree_util.tree_leaves_with_path(shapes['params'])
        if jax.tree_util.keystr(k).endswith("['scale']")
    ]
    assert _count(shapes['batch_stats']) == 2 * _count(scales)


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
def test_backbone_feature_shapes(depth):
    shapes = jax.eval_shape(
        lambda x: ResNet(depth).init_with_output(jax.random.key(0), x)[0], jnp.zeros((2, 224, 224, 3))
    )
    sides = (112, 56, 56, 28, 14, 7)  # stem, max-pool, layer1..4
    assert [s.shape for s in shapes] == [(2, side, side, c) for side, c in zip(sides, stage_channels(depth))]


@pytest.mark.parametrize(
    'depth, size, decoder',
    [(d, 64, 'released') for d in sorted(TORCHVISION_PARAMS)]
    + [
        ('resnet18', 224, 'released'),
        ('resnet50', 224, 'released'),
        ('resnet18', 64, 'paper'),
        ('resnet50', 64, 'paper'),
    ],
)
def test_weight_map_shape(depth, size, decoder):
    """Shapes only (`jax.eval_shape` traces without compiling: an XLA compile of each U-Net
    costs half a minute on 2 CPU cores); the values are checked below on one network."""
    g = WeightMapNet(depth, width=0.125, decoder=decoder)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(g.init, jax.random.key(0), x)
    maps = jax.eval_shape(g.apply, variables, x)
    assert maps.shape == (2, size, size) and maps.dtype == jnp.float32


@functools.lru_cache(maxsize=None)
def _initialised(decoder: str, initial_weight: float = 0.5):
    """`(variables, maps)` of g (ResNet-18 at width 1/8) initialised on two 64 px images, and its
    maps of them (`init_with_output`: what `apply` of those variables gives): one compile per
    decoder and weight, shared by the tests below."""
    g = WeightMapNet('resnet18', width=0.125, decoder=decoder, initial_weight=initial_weight)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    maps, variables = jax.jit(g.init_with_output)(jax.random.key(0), x)
    return variables, np.asarray(maps)


@pytest.mark.parametrize('decoder', ['released', 'paper'])
def test_weight_map_values_in_unit_interval(decoder):
    _, maps = _initialised(decoder)
    assert maps.shape == (2, 64, 64)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and np.isfinite(maps).all() and maps.std() > 0


@pytest.mark.parametrize(
    'decoder, bias_path', [('released', ('decoder', 'up5', 'conv2', 'bias')), ('paper', ('decoder5', 'bn', 'bias'))]
)
def test_initial_weight_sets_the_last_bias_and_the_untrained_map(decoder, bias_path):
    """Only the last layer's bias changes with `initial_weight`: logit(0.9) = log 9; the
    untrained map then sits around 0.9 instead of 0.5 (eval_shape elsewhere; one init here)."""
    out = {w: _initialised(decoder, w) for w in (0.5, 0.9)}
    bias = lambda v: np.asarray(functools.reduce(lambda t, k: t[k], bias_path, v['params']))
    np.testing.assert_allclose(bias(out[0.5][0]), 0.0)
    np.testing.assert_allclose(bias(out[0.9][0]), np.log(9.0), rtol=1e-6)
    rest = lambda v: [
        leaf for p, leaf in jax.tree_util.tree_leaves_with_path(v) if tuple(k.key for k in p)[1:] != bias_path
    ]
    for a, b in zip(rest(out[0.5][0]), rest(out[0.9][0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert abs(out[0.5][1].mean() - 0.5) < 0.15 and abs(out[0.9][1].mean() - 0.9) < 0.06
    with pytest.raises(ValueError, match='initial_weight'):
        jax.eval_shape(WeightMapNet(initial_weight=1.0).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_weight_map_rejects_sizes_not_divisible_by_32():
    g = WeightMapNet('resnet18', width=0.125)
    with pytest.raises(ValueError, match='divisible by 32'):
        jax.eval_shape(g.init, jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def test_bfloat16_forward_close_to_float32():
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    g32 = WeightMapNet('resnet18', width=0.25)
    g16 = WeightMapNet('resnet18', width=0.25, dtype=jnp.bfloat16)
    variables = g32.init(jax.random.key(0), x)
    m32 = np.asarray(jax.jit(g32.apply)(variables, x))
    m16 = jax.jit(g16.apply)(variables, x)
    assert m16.dtype == jnp.float32  # the map itself is returned in float32
    assert jax.tree.leaves(variables['params'])[0].dtype == jnp.float32
    # The map's scale is 1 (weights in [0, 1]); its error is g's roundings in series.
    np.testing.assert_allclose(np.asarray(m16), m32, rtol=0, atol=bf16_tolerance(BF16_LAYERS['g']))
    f32, f16 = Classifier(5, width=0.25), Classifier(5, width=0.25, dtype=jnp.bfloat16)
    fv = f32.init(jax.random.key(0), x)
    logits = np.asarray(f32.apply(fv, x))
    # Relative to the logits' scale: f's roundings in series.
    np.testing.assert_allclose(
        np.asarray(f16.apply(fv, x)),
        logits,
        rtol=0,
        atol=bf16_tolerance(BF16_LAYERS['resnet18']) * np.abs(logits).max(),
    )


def test_cam_decomposes_the_class_score():
    """Without the ReLU, the mean of the class map is the logit minus the bias (CAM's identity)."""
    f = Classifier(4, width=0.25)
    x = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
    v = f.init(jax.random.key(0), x)
    v['params']['head']['kernel'] = jnp.abs(v['params']['head']['kernel'])  # positive weights: ReLU is inactive
    logits = f.apply(v, x)
    cams = f.apply(v, x, jnp.array([1, 3]), method=Classifier.class_activation_maps)
    bias = v['params']['head']['bias']
    np.testing.assert_allclose(
        np.asarray(cams.mean(axis=(1, 2))),
        np.asarray(logits[jnp.arange(2), jnp.array([1, 3])] - bias[jnp.array([1, 3])]),
        rtol=1e-4,
        atol=1e-5,
    )


# The released SkipDecoder (what-is-where-by-looking @ f237ab4, base.py): every decoder tensor
# with its PyTorch shape, written from that file for ResNet-18 (full_features 64, 64, 128, 256,
# 512) and ResNet-50 (64, 256, 512, 1024, 2048). Its `up5.BN2` is created but never called, so it
# has no counterpart here.
def _released_decoder_shapes(ff):
    shapes = {}

    def conv(name, cin, cout):
        shapes[f'{name}.weight'] = (cout, cin, 3, 3)
        shapes[f'{name}.bias'] = (cout,)

    def bn(name, c):
        for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{name}.{leaf}'] = (c,)

    conv('bottleneck.conv1', ff[4], ff[4])
    bn('bottleneck.BN1', ff[4])
    conv('bottleneck.conv2', ff[4], ff[4])
    bn('bottleneck.BN2', ff[4])
    blocks = [
        ('up1', ff[4] + ff[3], ff[3]),
        ('up2', ff[3] + ff[2], ff[2]),
        ('up3', ff[2] + ff[1], ff[1]),
        ('up4', ff[1] + ff[0], ff[0]),
        ('up5', ff[0] + ff[0], 1),
    ]
    for name, cin, cout in blocks:
        conv(f'{name}.conv1', cin, cout)
        conv(f'{name}.conv2', cout, cout)
        bn(f'{name}.BN1', cout)
        if name != 'up5':
            bn(f'{name}.BN2', cout)
    return shapes


RELEASED_FULL_FEATURES = {'resnet18': (64, 64, 128, 256, 512), 'resnet50': (64, 256, 512, 1024, 2048)}


def _flax_decoder_as_torch(depth):
    shapes = jax.eval_shape(WeightMapNet(depth).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    out = {}
    for collection in ('params', 'batch_stats'):
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[collection]['decoder'])[0]:
            keys = [p.key for p in path]
            module = keys[:-1]
            # 'bottleneck_conv1' -> 'bottleneck.conv1'; 'up1', 'bn1' -> 'up1.BN1'
            module = [m.replace('bottleneck_', 'bottleneck.').replace('bn', 'BN') for m in module]
            torch_leaf = {
                'kernel': 'weight',
                'scale': 'weight',
                'bias': 'bias',
                'mean': 'running_mean',
                'var': 'running_var',
            }[keys[-1]]
            shape = leaf.shape
            if keys[-1] == 'kernel':  # HWIO -> OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            out['.'.join(module + [torch_leaf])] = shape
    return out


@pytest.mark.parametrize('depth', ['resnet18', 'resnet50'])
def test_released_decoder_tensors_match_the_authors_skip_decoder(depth):
    assert _flax_decoder_as_torch(depth) == _released_decoder_shapes(RELEASED_FULL_FEATURES[depth])


@pytest.mark.parametrize('depth', ['resnet18', 'resnet50'])
def test_paper_decoder_widths_and_skips(depth):
    """The paper-text decoder: conv1 sees the upsampled features plus the skip of the same
    resolution (the last block: the RGB input), conv2 has no bias (BatchNorm follows)."""
    g = WeightMapNet(depth, decoder='paper')
    params = jax.eval_shape(g.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))['params']
    ch = stage_channels(depth)  # stem, pool, layer1..4
    ins = [ch[5] + ch[4], 256 + ch[3], 128 + ch[2], 64 + ch[0], 32 + 3]
    for i, (cin, cout) in enumerate(zip(ins, (256, 128, 64, 32, 1))):
        block = params[f'decoder{i + 1}']
        assert block['conv1']['kernel'].shape[2] == cin
        assert block['conv2']['kernel'].shape[3] == cout and 'bias' not in block['conv2']


def test_align_corners_resize_matches_pytorch():
    torch = pytest.importorskip('torch')
    from wsol_jax.models.weight_map import resize_align_corners, upsample_bilinear2x

    x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(tx, size=(32, 20), mode='bilinear', align_corners=True)
    np.testing.assert_allclose(
        np.asarray(resize_align_corners(jnp.asarray(x), 32, 20)), want.permute(0, 2, 3, 1).numpy(), atol=1e-5
    )
    want2 = torch.nn.Upsample(scale_factor=2, mode='bilinear')(tx)
    np.testing.assert_allclose(
        np.asarray(upsample_bilinear2x(jnp.asarray(x))), want2.permute(0, 2, 3, 1).numpy(), atol=1e-5
    )


@pytest.mark.parametrize('shape', [(4, 6, 5, 3), (2, 2, 2, 5), (3, 1, 1, 4)])
def test_batchnorm_equals_pytorch_batchnorm2d(shape):
    """models.norm.BatchNorm against torch.nn.BatchNorm2d (momentum 0.1, eps 1e-5) in float64:
    train-mode outputs and running statistics after each of four steps (the running variance
    takes the unbiased batch variance, n / (n - 1); n = 3 in the last case), then eval mode."""
    torch = pytest.importorskip('torch')
    from wsol_jax.models.norm import BatchNorm

    rng = np.random.default_rng(0)
    channels = shape[-1]
    reference = torch.nn.BatchNorm2d(channels).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    with jax.enable_x64(True):
        variables = {
            'params': {
                'scale': jnp.asarray(reference.weight.detach().numpy().copy()),
                'bias': jnp.asarray(reference.bias.detach().numpy().copy()),
            },
            'batch_stats': {'mean': jnp.zeros(channels, jnp.float64), 'var': jnp.ones(channels, jnp.float64)},
        }
        train = jax.jit(lambda v, x: BatchNorm(False, dtype=jnp.float64).apply(v, x, mutable=['batch_stats']))
        for step in range(4):
            x = rng.normal(2.0 * step, 1.0 + step, size=shape)
            want = reference.train()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().permute(0, 2, 3, 1).numpy()
            got, updates = train(variables, jnp.asarray(x))
            variables = {**variables, 'batch_stats': updates['batch_stats']}
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                np.asarray(variables['batch_stats']['mean']), reference.running_mean.numpy(), rtol=1e-12, atol=1e-12
            )
            np.testing.assert_allclose(
                np.asarray(variables['batch_stats']['var']), reference.running_var.numpy(), rtol=1e-12
            )
        want = reference.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().permute(0, 2, 3, 1).numpy()
        got = BatchNorm(True, dtype=jnp.float64).apply(variables, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_batchnorm_keeps_flax_variable_names_and_float32_statistics():
    """The variables that checkpoints and the torchvision import address, in float32 under
    bfloat16 compute; one value per channel in train mode is refused, as PyTorch refuses it."""
    from wsol_jax.models.norm import BatchNorm

    x = jnp.ones((2, 4, 4, 3), jnp.bfloat16)
    variables = BatchNorm(False, dtype=jnp.bfloat16).init(jax.random.key(0), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == {
        'params': {'scale': ((3,), jnp.float32), 'bias': ((3,), jnp.float32)},
        'batch_stats': {'mean': ((3,), jnp.float32), 'var': ((3,), jnp.float32)},
    }
    y, updates = BatchNorm(False, dtype=jnp.bfloat16).apply(variables, x, mutable=['batch_stats'])
    assert y.dtype == jnp.bfloat16 and updates['batch_stats']['var'].dtype == jnp.float32
    with pytest.raises(ValueError, match='more than one value per channel'):
        BatchNorm(False).apply(variables, jnp.ones((1, 1, 1, 3)), mutable=['batch_stats'])


def test_zero_init_last_starts_every_block_as_its_shortcut():
    """With `zero_init_last` the last BatchNorm of every block starts at scale 0, so a block's
    output is relu(shortcut): the identity on non-negative inputs where the shape is kept."""
    from wsol_jax.models.resnet import BasicBlock, Bottleneck

    x = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 8, 8, 16)))
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(BatchNorm, use_running_average=True)
    for block, planes in ((BasicBlock, 16), (Bottleneck, 4)):
        zero = block(planes, 1, conv, norm, zero_init_last=True)
        y, v = zero.init_with_output(jax.random.key(0), x)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
        default = block(planes, 1, conv, norm)
        assert not np.allclose(np.asarray(default.apply(default.init(jax.random.key(0), x), x)), np.asarray(x))
    from wsol_jax.models import registry

    small = registry.build('resnet18_small', 0.25)  # from scratch only: it starts zero-initialised
    assert (small.stem, small.zero_init_last) == ('small', True)
    assert not registry.build('resnet18', 0.25).zero_init_last  # ImageNet weights replace the init anyway
