"""The methods table, the named triplet terms (Eq. 3, Eq. 4), the optimiser's warm-up and clipping,
and random erasing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wsol_jax import config as config_lib, losses, methods, workdir
from wsol_jax.data.dataset import random_erase
from wsol_jax.errors import ConfigError
from wsol_jax.train.state import make_optimizer


@pytest.mark.parametrize(
    'method, kind, train, networks, target, output, objective',
    [
        ('method1', 'classifier', True, ('f_classifier',), 'f_classifier', 'outputs', 'method1_objective'),
        ('method1', 'encoder', True, ('f_classifier',), 'f_classifier', 'features', 'embedding_objective'),
        ('method1', 'encoder', False, ('f_encoder',), 'f_encoder', 'features', 'embedding_objective'),
        ('method2', 'classifier', True, ('f_classifier', 'f_siamese'), 'f_siamese', 'outputs', 'method2_objective'),
        ('method2', 'encoder', True, ('f_classifier',), 'f_classifier', 'features', 'method2_objective'),
        ('method2', 'encoder', False, ('f_encoder',), 'f_encoder', 'features', 'method2_objective'),
    ],
)
def test_what_g_compares_follows_the_method_and_the_kind_of_f(method, kind, train, networks, target, output, objective):
    c = config_lib.base_config(method)
    c.f.kind, c.f.train = kind, train
    assert methods.f_networks(c) == networks
    t = methods.g_target(c)
    assert (t.f_network, t.f_output, t.objective.__name__) == (target, output, objective)
    assert methods.has_classifier(c) == ('f_classifier' in networks)


@pytest.mark.parametrize(
    'arch, kind, train, absent',
    [
        ('resnet18', 'classifier', True, set()),  # the paper's f: every row
        ('convnext_tiny', 'classifier', True, set()),  # CAM through its head norm
        ('resnet18', 'encoder', True, set()),  # a classifier is trained beside: Top-1 and CAM
        ('vit_s16', 'classifier', True, {'cam'}),  # a class token: no CAM
        ('vit_s16', 'encoder', True, {'cam'}),
        ('resnet18', 'encoder', False, {'top_k', 'cam'}),  # from a file, no class head
        ('vit_s16', 'encoder', False, {'top_k', 'cam'}),
    ],
)
def test_what_the_evaluation_leaves_out_follows_f(arch, kind, train, absent):
    c = config_lib.base_config('method1')
    c.f.arch, c.f.kind, c.f.train = arch, kind, train
    reasons = methods.not_defined(c)
    assert set(reasons) == absent and set(reasons) <= set(methods.NOT_DEFINED_NAMES)
    if 'top_k' in absent:
        assert reasons['top_k'].startswith('f has no class head')


def test_the_methods_table_names_what_differs():
    assert tuple(methods.METHODS) == config_lib.METHODS
    m1, m2 = methods.get('method1'), methods.get('method2')
    assert (m1.images_per_example, m2.images_per_example) == (1, 3)
    assert methods.F_NETWORKS[workdir.F_SIAMESE].embedding and not methods.F_NETWORKS[workdir.F_CLASSIFIER].embedding
    with pytest.raises(ConfigError, match='method3'):
        methods.get('method3')


def test_inner_and_outer_triplet_terms_hand_computed():
    a = jnp.array([[0.0, 0.0]])
    near, far = jnp.array([[3.0, 4.0]]), jnp.array([[6.0, 8.0]])  # distances 5 and 10
    # Eq. 3: max(d(I_a, J^f_a) - d(I_a, J^b_a) + margin, 0)
    assert float(losses.inner_triplet_loss(a, near, far, 1.0)) == pytest.approx(0.0)
    assert float(losses.inner_triplet_loss(a, far, near, 1.0)) == pytest.approx(6.0)
    # Eq. 4: max(d(J^f_a, J^f_p) - d(J^f_a, J^f_n) + margin, 0)
    assert float(losses.outer_triplet_loss(a, far, near, 2.0)) == pytest.approx(7.0)
    emb = {'I_a': a, 'Jf_a': far, 'Jb_a': near, 'Jf_p': near, 'Jf_n': far}
    total, parts = losses.method2_loss(emb, jnp.zeros((1, 2, 2)), margin=1.0)
    assert float(parts['inner']) == pytest.approx(float(losses.inner_triplet_loss(a, far, near)))
    assert float(parts['outer']) == pytest.approx(float(losses.outer_triplet_loss(far, near, far)))


def test_warmup_starts_at_zero_and_clipping_bounds_the_update():
    cfg = config_lib.optimizer(0.1, 0.0, momentum=0.0, warmup_epochs=1.0, clip_norm=1.0)
    tx = make_optimizer(cfg, steps_per_epoch=4)
    params = {'w': jnp.zeros(3)}
    state = tx.init(params)
    grads = {'w': jnp.array([30.0, 40.0, 0.0])}  # norm 50, clipped to 1
    sizes = []
    for _ in range(6):
        updates, state = tx.update(grads, state, params)
        sizes.append(float(optax.global_norm(updates)))
    # lr 0, 0.025, 0.05, 0.075, then 0.1: update = lr * clipped gradient (norm 1)
    np.testing.assert_allclose(sizes, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], atol=1e-6)


def test_random_erase_sets_a_rectangle_to_the_mean_colour():
    images = jnp.ones((64, 32, 32, 3))
    out = np.asarray(random_erase(images, jax.random.key(0), prob=0.5))
    erased = (out == 0).all(-1)
    share = erased.mean(axis=(1, 2))
    assert 0.2 < np.mean(share > 0) < 0.8  # about half the images
    assert share.max() <= 0.45 and share[share > 0].min() >= 0.02
    for m in erased[share > 0]:  # one axis-aligned rectangle each
        ys, xs = np.nonzero(m)
        assert m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()
    np.testing.assert_array_equal(np.asarray(random_erase(images, jax.random.key(0), prob=0.0)), 1.0)
