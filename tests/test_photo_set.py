"""benchmarks/make_photo_set.py: a tiny real-photo set, read back by the wsolevaluation reader."""

import filecmp
import importlib.util
import os

import cv2
import numpy as np
import pytest

pytest.importorskip('skimage', reason='make_photo_set.py takes its photographs from scikit-image')

from wsol_jax.data import formats  # noqa: E402
from wsol_jax.data.images import read_image, read_mask  # noqa: E402

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks', 'make_photo_set.py')


@pytest.fixture(scope='module')
def mps():
    spec = importlib.util.spec_from_file_location('make_photo_set', _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def built(mps, tmp_path_factory):
    root = str(tmp_path_factory.mktemp('photo') / 'set')
    assert (
        mps.main(
            [
                f'--out={root}',
                '--seed=3',
                '--size=64',
                '--num_train=12',
                '--num_val=5',
                '--num_test=11',
                '--no_progress',
            ]
        )
        == root
    )
    return root


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _localization(root, split):
    with open(os.path.join(root, 'metadata', split, 'localization.txt')) as fh:
        return [line.strip('\n').split(',') for line in fh]


def test_reader_sees_the_set(mps, built):
    """The default (--loc=masks): wsolevaluation's OpenImages lines (3 fields, an ignore file per
    image, which is empty), and the reader's box is the mask's rectangle."""
    records, num_classes = formats.wsolevaluation(built)
    assert {k: len(v) for k, v in records.items()} == {'train': 12, 'val': 5, 'test': 11}
    assert num_classes <= len(mps.CLASSES) == 10
    with open(os.path.join(built, 'classes.txt')) as fh:
        assert fh.read().split() == mps.CLASSES
    assert sorted(r.label for r in records['train']) == sorted(np.arange(12) % 10)  # balanced
    for split, rs in records.items():
        if split != 'train':  # their get_mask_paths: image, mask, ignore on every line (one per image here)
            assert [len(f) for f in _localization(built, split)] == [3] * len(rs)
        for r in rs:
            assert 0 <= r.label < 10
            assert read_image(r.path, r.source).shape == (64, 64, 3)
            if split == 'train':
                assert r.boxes.shape == (0, 4) and r.mask_path is None
                continue
            assert r.boxes_from_mask and r.mask_path and len(r.ignore_mask_paths) == 1
            mask = read_mask(r.mask_path, r.mask_kind, r.source)
            assert mask.shape == (64, 64) and mask.any()
            assert not read_mask(r.ignore_mask_paths[0], 'nonzero', r.source).any()
    for name in ('README.txt', 'preview.png'):
        assert os.path.isfile(os.path.join(built, name))
    assert not os.path.exists(built + '.tmp')


def test_deterministic_for_a_seed(mps, built, tmp_path):
    again = mps.build(str(tmp_path / 'again'), seed=3, size=64, num_train=12, num_val=5, num_test=11, progress=False)
    files = _files(built)
    assert files == _files(again) and 'metadata/test/localization.txt' in files
    match, mismatch, errors = filecmp.cmpfiles(built, again, files, shallow=False)
    assert not mismatch and not errors
    other = mps.build(str(tmp_path / 'other'), seed=4, size=64, num_train=12, num_val=5, num_test=11, progress=False)
    assert not filecmp.cmp(
        os.path.join(built, 'images/test/00000.jpg'), os.path.join(other, 'images/test/00000.jpg'), shallow=False
    )


def test_boxes_layout_gives_the_masks_rectangles_and_existing_output(mps, built, tmp_path):
    """--loc=boxes (wsolevaluation's CUB layout: 5 integer fields per line) lists, for the same
    seed, the bounding rectangles of the masks that --loc=masks lists."""
    root = mps.build(
        str(tmp_path / 'b'), seed=3, size=64, num_train=12, num_val=5, num_test=11, loc='boxes', progress=False
    )
    records, _ = formats.wsolevaluation(root)
    lines = _localization(root, 'test')
    assert [len(f) for f in lines] == [5] * 11 and all(v.isdigit() for f in lines for v in f[1:])
    for r in records['test']:
        assert not r.boxes_from_mask and r.mask_path is None and r.boxes.shape == (1, 4)
        mask = read_mask(os.path.join(built, 'masks', 'test', os.path.basename(r.path)[:-4] + '.png'), 'nonzero')
        x, y, w, h = cv2.boundingRect(mask)
        assert [x, y, x + w, y + h] == r.boxes[0].tolist()
    with pytest.raises(SystemExit, match='exists'):
        mps.main([f'--out={root}', '--num_train=3', '--num_test=4'])
