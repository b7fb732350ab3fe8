"""Eq. 1-4 against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsol_jax import losses
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_classification_loss_hand_computed():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    total, parts = losses.classification_loss(jnp.asarray(logits), jnp.array([0, 2]))
    expected = -(_log_softmax(logits)[0, 0] + np.log(1 / 3)) / 2
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert float(parts['accuracy']) == 0.5  # ties resolve to class 0 for the second row


def test_label_smoothing_hand_computed():
    logits = np.array([[2.0, 0.0, -1.0]])
    total, _ = losses.classification_loss(jnp.asarray(logits), jnp.array([1]), label_smoothing=0.3)
    target = np.array([0.1, 0.8, 0.1])  # (1 - 0.3) * one_hot + 0.3 / 3
    assert float(total) == pytest.approx(-(target * _log_softmax(logits)[0]).sum(), rel=1e-6)


def test_blank_loss_is_the_kl_from_uniform():
    # uniform logits: f names no class, nothing to pay
    assert float(losses.blank_loss(jnp.zeros((2, 5)))) == pytest.approx(0.0, abs=1e-6)
    # p = (2/3, 1/3): KL(U || p) = -(log 2/3 + log 1/3) / 2 - log 2 = log(9/8) / 2
    assert float(losses.blank_loss(jnp.array([[np.log(2.0), 0.0]]))) == pytest.approx(np.log(9 / 8) / 2, rel=1e-5)
    # grows without bound as f grows sure of one class
    assert float(losses.blank_loss(jnp.array([[20.0, 0.0, 0.0]]))) > 5.0


def test_triplet_loss_eq2():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    p = jnp.array([[3.0, 4.0], [0.0, 1.0]])  # distances 5 and 1
    n = jnp.array([[0.0, 1.0], [6.0, 8.0]])  # distances 1 and 10
    # max(5 - 1 + 1, 0) = 5 ; max(1 - 10 + 1, 0) = 0 -> mean 2.5
    assert float(losses.triplet_loss(a, p, n)) == pytest.approx(2.5, rel=1e-5)
    assert float(losses.triplet_loss(a, p, n, margin=0.0)) == pytest.approx(2.0, rel=1e-5)


def test_method1_loss_hand_computed_and_target_is_fixed():
    logits_image = np.array([[1.0, 2.0, 0.5]])
    logits_masked = np.array([[0.0, 1.0, 3.0]])
    weight_map = np.full((1, 2, 2), 0.25)
    target = np.exp(_log_softmax(logits_image))
    ce = -(target * _log_softmax(logits_masked)).sum()
    total, parts = losses.method1_loss(
        jnp.asarray(logits_image), jnp.asarray(logits_masked), jnp.asarray(weight_map), reg_weight=1.0
    )
    assert float(parts['ce']) == pytest.approx(ce, rel=1e-5)
    assert float(parts['reg']) == pytest.approx(0.25)
    assert float(total) == pytest.approx(ce + 0.25, rel=1e-5)
    # No gradient flows into the target f(I).
    grad = jax.grad(lambda li: losses.method1_loss(li, jnp.asarray(logits_masked), jnp.asarray(weight_map))[0])(
        jnp.asarray(logits_image)
    )
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_method2_loss_terms_and_ablation_weights():
    z = jnp.zeros((1, 2))
    emb = {
        'I_a': z,
        'Jf_a': jnp.array([[3.0, 4.0]]),
        'Jb_a': jnp.array([[0.0, 1.0]]),
        'Jf_p': jnp.array([[3.0, 4.0]]),
        'Jf_n': jnp.array([[3.0, 5.0]]),
    }
    m = jnp.full((1, 2, 2), 0.5)
    total, parts = losses.method2_loss(emb, m)
    # inner: max(5 - 1 + 1, 0) = 5; outer: max(0 - 1 + 1, 0) = 0; reg 0.5
    assert float(parts['inner']) == pytest.approx(5.0, rel=1e-5)
    assert float(parts['outer']) == pytest.approx(0.0, abs=1e-5)
    assert float(total) == pytest.approx(5.5, rel=1e-5)
    total_no_inner, _ = losses.method2_loss(emb, m, inner_weight=0.0)
    assert float(total_no_inner) == pytest.approx(0.5, rel=1e-5)
    total_no_reg, _ = losses.method2_loss(emb, m, reg_weight=0.0)
    assert float(total_no_reg) == pytest.approx(5.0, rel=1e-5)


@pytest.mark.parametrize('space', ['normalized', 'pixels'])
def test_apply_weight_map_spaces(space):
    rng = np.random.default_rng(0)
    pixels = rng.random((2, 4, 4, 3)).astype(np.float32)
    images = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    ones, zeros = np.ones((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32)
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    np.testing.assert_allclose(losses.apply_weight_map(images, ones, space, mean, std), images, atol=1e-6)
    blank = np.asarray(losses.apply_weight_map(images, zeros, space, mean, std))
    if space == 'normalized':  # the dataset-mean colour
        np.testing.assert_allclose(blank, 0.0, atol=1e-6)
    else:  # black pixels, normalised
        np.testing.assert_allclose(blank, np.broadcast_to(-IMAGENET_MEAN / IMAGENET_STD, blank.shape), atol=1e-6)
    with pytest.raises(ValueError, match='mask_space'):
        losses.apply_weight_map(images, ones, 'rgb', mean, std)


def test_embedding_loss_is_the_cosine_distance_plus_lambda_l1_hand_computed():
    """Eq. 1 for an encoder f: D = 1 - cos(f(I), f(I * M)), independent of the features' scale."""
    image = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    masked = jnp.array([[6.0, 8.0], [0.0, 2.0]])  # the same direction (D = 0), orthogonal (D = 1)
    maps = jnp.full((2, 2, 2), 0.25)
    total, parts = losses.embedding_loss(image, masked, maps, reg_weight=2.0)
    assert float(parts['cosine']) == pytest.approx(0.5, abs=1e-6)
    assert float(parts['reg']) == pytest.approx(0.25)
    assert float(total) == pytest.approx(0.5 + 2.0 * 0.25, abs=1e-6)
    scaled, _ = losses.embedding_loss(10 * image, 0.1 * masked, maps, reg_weight=2.0)
    assert float(scaled) == pytest.approx(float(total), abs=1e-6)
    grad = jax.grad(lambda m: losses.embedding_loss(image, m, maps)[0])(masked)
    assert float(jnp.abs(grad[0]).max()) < 1e-6 and float(jnp.abs(grad[1]).max()) > 0.1  # no push where D = 0


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
