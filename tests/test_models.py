"""The ResNets match torchvision's structure; g's output shape and range; bf16 parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsol_jax.models import Classifier, ResNet, WeightMapNet, stage_channels

# Parameter counts of torchvision.models.resnetXX(num_classes=1000) (as printed by torchvision).
TORCHVISION_PARAMS = {'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
                      'resnet101': 44_549_160}


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
def test_classifier_parameter_count_matches_torchvision(depth):
    model = Classifier(1000, depth)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert _count(shapes['params']) == TORCHVISION_PARAMS[depth]
    # BatchNorm running mean and variance: one pair per BatchNorm scale vector, as torchvision's buffers.
    scales = [v for k, v in jax.tree_util.tree_leaves_with_path(shapes['params'])
              if jax.tree_util.keystr(k).endswith("['scale']")]
    assert _count(shapes['batch_stats']) == 2 * _count(scales)


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
def test_backbone_feature_shapes(depth):
    shapes = jax.eval_shape(lambda x: ResNet(depth).init_with_output(jax.random.key(0), x)[0],
                            jnp.zeros((2, 224, 224, 3)))
    assert [s.shape for s in shapes] == [(2, 112 // 2 ** i if i else 112, 112 // 2 ** i if i else 112, c)
                                         for i, c in enumerate(stage_channels(depth))]


@pytest.mark.parametrize('depth', sorted(TORCHVISION_PARAMS))
@pytest.mark.parametrize('size', [64, 224])
def test_weight_map_shape_and_range(depth, size):
    g = WeightMapNet(depth, width=0.125)
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    with jax.disable_jit():  # op-by-op: compiling the deepest U-Nets whole is slow on CPU
        variables = g.init(jax.random.key(0), x)
        maps = np.asarray(g.apply(variables, x))
    assert maps.shape == (2, size, size)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and np.isfinite(maps).all()


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
    np.testing.assert_allclose(np.asarray(m16), m32, atol=0.05)
    f32, f16 = Classifier(5, width=0.25), Classifier(5, width=0.25, dtype=jnp.bfloat16)
    fv = f32.init(jax.random.key(0), x)
    np.testing.assert_allclose(np.asarray(f16.apply(fv, x)), np.asarray(f32.apply(fv, x)), atol=0.1, rtol=0.05)


def test_cam_decomposes_the_class_score():
    """Without the ReLU, the mean of the class map is the logit minus the bias (CAM's identity)."""
    f = Classifier(4, width=0.25)
    x = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
    v = f.init(jax.random.key(0), x)
    v['params']['head']['kernel'] = jnp.abs(v['params']['head']['kernel'])  # positive weights: ReLU is inactive
    logits = f.apply(v, x)
    cams = f.apply(v, x, jnp.array([1, 3]), method=Classifier.class_activation_maps)
    bias = v['params']['head']['bias']
    np.testing.assert_allclose(np.asarray(cams.mean(axis=(1, 2))),
                               np.asarray(logits[jnp.arange(2), jnp.array([1, 3])] - bias[jnp.array([1, 3])]),
                               rtol=1e-4, atol=1e-5)
