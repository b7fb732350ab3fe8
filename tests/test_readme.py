"""The README's code: its fit_weight_map example runs as written (with the tiny preset instead of
the full synthetic benchmark, which the example's own comment names), and its test command is
the one .ci/run runs."""

import os
import re

import numpy as np

from helpers import ROOT

README = os.path.join(ROOT, 'README.md')


def _python_blocks(text: str) -> list[str]:
    return re.findall(r'```python\n(.*?)```', text, flags=re.S)


def test_the_fit_weight_map_example_runs_as_written_with_the_tiny_preset():
    example = next(b for b in _python_blocks(open(README).read()) if 'fit_weight_map' in b)
    assert "get_config('method1')" in example  # the example as a user copies it
    namespace = {}
    exec(compile(example.replace("get_config('method1')", "get_config('method1,tiny')"), README, 'exec'), namespace)
    out, data = namespace['out'], namespace['data']
    assert out.boxes.shape == (4, 4) and len(out.maps) == 4 and out.scores.shape == (4,)
    size = data.test.images.shape[1]
    assert np.all(out.boxes[:, :2] >= 0) and np.all(out.boxes[:, 2:] <= size)
    assert np.all((out.scores >= 0) & (out.scores <= 1))
    assert np.all(out.classes == -1)  # an encoder f names no class


def test_ci_runs_the_readme_test_command():
    command = re.search(
        r'pip install -r requirements.txt -r requirements-dev.txt && (python -m pytest[^`\n]*)', open(README).read()
    ).group(1)
    ci = open(os.path.join(ROOT, '.ci', 'run')).read().splitlines()
    assert command.strip() in [line.strip() for line in ci]


def test_the_library_pieces_run_as_written_on_a_tiny_g():
    """The README's pure-function example (g, Eq. 5, boxes, Eq. 6, the selection rule, the metrics),
    on a tiny g and two hand-made 64 px images whose ground truth is the whole image."""
    import jax

    example = next(b for b in _python_blocks(open(README).read()) if 'containment_score' in b)
    assert "WeightMapNet('resnet18')" in example and 'maps = g.apply(g_variables, images)' in example
    example = example.replace("WeightMapNet('resnet18')", "WeightMapNet('resnet_tiny_test', width=0.125)")
    example = example.replace(
        'maps = g.apply(g_variables, images)',
        'g_variables = g.init(jax.random.key(0), images)\nmaps = g.apply(g_variables, images)',
    )
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    namespace = dict(
        jax=jax,
        images=images,
        gt_boxes=np.array([[0, 0, 64, 64]] * 2),
        predicted=np.array([1, 0]),
        labels=np.array([1, 1]),
        gt_masks=np.ones((2, 64, 64), np.uint8),
    )
    exec(compile(example, README, 'exec'), namespace)
    assert namespace['boxes'].shape == (2, 4) and namespace['s'].shape == (2,)
    assert namespace['step'] == 2  # the later point is within one standard error of the best
    assert namespace['acc']['top1_cls'] == 0.5  # one of the two predictions is the label
    assert 0 <= namespace['ap'] <= 1
