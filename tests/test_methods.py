"""The methods table (wsol_jax/methods.py): which f each method trains, what g compares, what the
evaluation leaves out for an f, and the one check of a method's name."""

import pytest

from wsol_jax import config as config_lib, methods, workdir
from wsol_jax.errors import ConfigError


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
    assert workdir.f_networks(c) == networks
    t = methods.g_target(c)
    assert (t.f_network, t.f_output, t.objective.__name__) == (target, output, objective)
    assert workdir.has_classifier(c) == ('f_classifier' in networks)


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
