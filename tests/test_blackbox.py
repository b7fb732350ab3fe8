"""f as a black box, end to end: a ViT classifier f (no CAM) and an encoder f imported from a
weight file (no class head; with Method I and with Method II) each run every stage on the tiny
synthetic benchmark. The weight
map's rows (GT-known loc, MaxBoxAcc, PxAP) are there and equal what the exported localiser's
boxes score against the ground truth (IoU computed here); Top-1 cls equals f's own accuracy;
the CAM row and the Top-1 columns are absent where f does not define them, and the report says
why."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wsol_jax
from helpers import tiny_synthetic
from wsol_jax import run as run_lib
from wsol_jax.data import load_dataset
from wsol_jax.data.dataset import crop_protocol_boxes, normalize
from wsol_jax.models import registry
from wsol_jax.models.pretrained import write_backbone

WEIGHT_MAP_ROWS = {'weight_map_selected', 'weight_map_last'}
WEIGHT_MAP_KEYS = {
    'gt_known_loc',
    'maxboxacc_v1',
    'maxboxacc_v2',
    'maxboxacc_iou30',
    'maxboxacc_iou50',
    'maxboxacc_iou70',
    'pxap',
}
CLASS_KEYS = {'top1_loc', 'top1_cls', 'top5_loc', 'top5_cls'}
ENCODER = 'resnet_tiny_test'  # the encoder f's architecture


def _config(method='method1', **f):
    c = tiny_synthetic(method, g_epochs=1)  # one scored point of g: the rows, not their quality
    c.f.update(f)
    return c


@pytest.fixture(scope='module')
def vit_run(tmp_path_factory):
    """A ViT classifier f (patch 8 on the 32 px images' 4x4 grid), trained by train_f."""
    workdir = str(tmp_path_factory.mktemp('vit_f'))
    config = _config(arch='vit_tiny_test')
    return config, workdir, run_lib.run(config, workdir)


@pytest.fixture(scope='module')
def encoder_weights(tmp_path_factory):
    """A ResNet backbone (the tiny preset's `resnet_tiny_test` at width 1/8) written to a
    .safetensors file in torchvision's layout, no class head."""
    backbone = registry.build(ENCODER, 0.125)
    variables = jax.jit(backbone.init)(jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
    return write_backbone(variables, ENCODER, str(tmp_path_factory.mktemp('encoder_f') / 'encoder.safetensors'))


@pytest.fixture(scope='module')
def encoder_run(encoder_weights, tmp_path_factory):
    """An encoder f used as it is (`f.train=False`), never trained; g compares its pooled features
    (Eq. 1 with the cosine distance)."""
    config = _config(arch=ENCODER, kind='encoder', train=False, pretrained=encoder_weights)
    workdir = str(tmp_path_factory.mktemp('encoder_run'))
    return config, workdir, run_lib.run(config, workdir)


@pytest.fixture(scope='module')
def method2_encoder_run(encoder_weights, tmp_path_factory):
    """Method II on the same encoder f: g's inner and outer triplet losses (Eq. 3, 4) on its
    features, triplets drawn by the labels; no f is trained, no classifier."""
    config = _config('method2', arch=ENCODER, kind='encoder', train=False, pretrained=encoder_weights)
    workdir = str(tmp_path_factory.mktemp('method2_encoder_run'))
    return config, workdir, run_lib.run(config, workdir)


def _read(workdir: str) -> tuple[dict, str]:
    return (json.load(open(os.path.join(workdir, 'results.json'))), open(os.path.join(workdir, 'results.md')).read())


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes `(N, 4)` with boxes `(N, K, 4)` (`[x0, y0, x1, y1]`, areas with the +1 pixel
    convention of wsolevaluation), `(N, K)`; padding rows (negative) score -1."""
    a = a[:, None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)
    inter = w * h
    return np.where(b[..., 0] >= 0, inter / (area(a) + area(b) - inter), -1.0)


def _gt_known_of_the_export(config, workdir: str) -> float:
    """GT-known loc of the selected g recomputed outside the evaluation: the localiser loaded from
    the workdir boxes the test images (32 px: its whole image is the evaluation's centre crop)."""
    data = load_dataset(config, cache_dir=os.path.join(workdir, 'data_cache'))
    boxes = wsol_jax.Localizer.from_workdir(workdir)(list(np.asarray(data.test.images))).boxes
    gt = crop_protocol_boxes(data.test, slice(None), config.data.crop_size)
    return float(np.mean(_iou(np.asarray(boxes), gt).max(axis=1) >= 0.5))


def test_a_vit_f_has_no_cam_row_and_the_report_says_why(vit_run):
    config, workdir, results = vit_run
    record, markdown = _read(workdir)
    assert set(results) == set(record['results']) == WEIGHT_MAP_ROWS
    for row in results.values():
        assert set(row) == WEIGHT_MAP_KEYS | CLASS_KEYS
        assert row['top1_loc'] <= min(row['gt_known_loc'], row['top1_cls'])
    assert set(record['not_defined']) == {'cam'}
    assert (
        '- CAM of f (baseline): not defined, f (vit_tiny_test) pools a class token, not an average over '
        'positions, so CAM is not defined for it.'
    ) in markdown
    assert '| CAM of f' not in markdown and '- CAM: class activation maps' not in markdown
    assert '| Top-1 loc |' in markdown.replace(' | Top-1 cls', '')  # the class columns stay
    assert os.path.getsize(os.path.join(workdir, 'overlays.png')) > 0


def test_the_vit_runs_top1_cls_is_its_own_accuracy_and_gt_known_loc_its_localisers(vit_run):
    """Top-1 cls against the ViT applied here to the centre crops (the whole 32 px images)."""
    from wsol_jax.context import Context, frozen_f
    from wsol_jax import parallel

    config, workdir, results = vit_run
    data = load_dataset(config, cache_dir=os.path.join(workdir, 'data_cache'))
    model, variables = frozen_f(Context(config, workdir, data, parallel.make_mesh()), 'f_classifier')
    images = normalize(jnp.asarray(np.asarray(data.test.images)))
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    accuracy = float(np.mean(logits.argmax(-1) == data.test.labels))
    assert results['weight_map_selected']['top1_cls'] == pytest.approx(accuracy, abs=1e-9)
    assert results['weight_map_selected']['gt_known_loc'] == pytest.approx(
        _gt_known_of_the_export(config, workdir), abs=1e-9
    )


@pytest.mark.parametrize('run', ['encoder_run', 'method2_encoder_run'])
def test_an_encoder_f_has_only_the_weight_map_rows_and_the_report_says_why(run, request):
    config, workdir, results = request.getfixturevalue(run)
    record, markdown = _read(workdir)
    assert set(results) == set(record['results']) == WEIGHT_MAP_ROWS
    assert all(set(row) == WEIGHT_MAP_KEYS for row in results.values())
    assert set(record['not_defined']) == {'top_k', 'cam'}
    assert set(record['f_quality']) == {'f_encoder'} and not os.path.exists(os.path.join(workdir, 'f_classifier'))
    why = f'not defined, f has no class head ({ENCODER} used as an encoder from f.pretrained, f.train=False).'
    assert f'- Top-1/Top-k loc and cls: {why}' in markdown and f'- CAM of f (baseline): {why}' in markdown
    table = [line for line in markdown.splitlines() if line.startswith('| method |')]
    assert table == ['| method | GT-known loc | PxAP | MaxBoxAcc | MaxBoxAccV2 |']
    assert 'Top-1 / Top-5 cls' not in markdown and 'Top-1 loc also needs' not in markdown
    history = json.load(open(os.path.join(workdir, 'g_history.json')))['points']
    train_keys = set().union(*history.values())
    if config.method == 'method2':  # g trained with the triplet terms on the encoder's features
        assert {'train/inner', 'train/outer'} <= train_keys and 'train/cosine' not in train_keys, train_keys
    else:
        assert 'train/cosine' in train_keys, train_keys


def test_the_encoder_runs_gt_known_loc_is_what_its_localiser_scores(encoder_run):
    config, workdir, results = encoder_run
    localizer = wsol_jax.Localizer.from_workdir(workdir)
    assert not localizer.has_classes
    assert results['weight_map_selected']['gt_known_loc'] == pytest.approx(
        _gt_known_of_the_export(config, workdir), abs=1e-9
    )
