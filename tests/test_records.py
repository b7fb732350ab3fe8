"""The on-disk record cache (wsol_jax/data/records.py) and the streaming pipeline over it."""

import os
import pickle

import jax
import numpy as np
import pytest

from wsol_jax import parallel
from wsol_jax.data import records
from wsol_jax.data.dataset import Split
from wsol_jax.data.pipeline import classification_batches, map_split, triplet_batches
from wsol_jax.errors import DataError


def _samples(n, size=16, seed=0):
    """Cache-size images, and masks at original resolutions that differ per sample
    (`(12 + i % 4) x (20 + i)`: height x width), with values 0, 1 and 255 (ignored)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = [rng.choice(np.array([0, 1, 255], np.uint8), (12 + i % 4, 20 + i), p=[0.6, 0.3, 0.1]) for i in range(n)]
    labels = np.arange(n) % 3
    return images, masks, labels


def _box(i):
    return np.array([[i + 0.25, 0.5, i + 2.75, 3.0]])  # original pixels: fractions are kept


def _write(folder, images, masks, labels, codec='raw', with_masks=True):
    def build(writer):
        for i, (im, m, c) in enumerate(zip(images, masks, labels)):
            writer.add(im, c, f'img{i}', _box(i), m if with_masks else None, m.shape[::-1])
        return []

    return records.cached(str(folder), images.shape[1], build, codec)


@pytest.fixture(scope='module')
def stored(tmp_path_factory):
    images, masks, labels = _samples(11)
    split = _write(tmp_path_factory.mktemp('rec') / 'split', images, masks, labels)
    return split, images, masks, labels


def test_records_index_like_numpy(stored):
    split, images, masks, labels = stored
    assert isinstance(split.images, records.RecordArray) and len(split) == 11
    assert split.images.shape == images.shape and split.images.dtype == np.uint8 and split.images.ndim == 4
    for index in (
        3,
        -1,
        np.int64(5),
        slice(2, 9, 3),
        slice(None),
        np.array([[4, 0, 4], [10, 1, 2]]),
        np.arange(11) % 2 == 0,
        [],
    ):
        np.testing.assert_array_equal(split.images[index], images[index])
    np.testing.assert_array_equal(np.asarray(split.images), images)
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.boxes[:, 0], np.concatenate([_box(i) for i in range(11)]))
    np.testing.assert_array_equal(split.original_sizes, [m.shape[::-1] for m in masks])
    assert split.names == [f'img{i}' for i in range(11)]
    with pytest.raises(IndexError):
        split.images[11]
    with pytest.raises(IndexError):
        split.images[np.array([0.5])]


def test_masks_are_kept_at_their_original_resolutions(stored):
    """One mask is an array of its own size; any other index a list of them, in order."""
    split, _, masks, _ = stored
    assert isinstance(split.masks, records.MaskArray)
    np.testing.assert_array_equal(split.masks[-1], masks[10])
    assert split.masks[np.int64(4)].shape == (12, 24) and split.masks[4].dtype == np.uint8
    for index, rows in (
        (slice(2, 9, 3), [2, 5, 8]),
        (np.array([7, 0, 7]), [7, 0, 7]),
        (np.arange(11) % 5 == 0, [0, 5, 10]),
        ([], []),
    ):
        got = split.masks[index]
        assert isinstance(got, list) and len(got) == len(rows)
        for m, i in zip(got, rows):
            np.testing.assert_array_equal(m, masks[i])
    # The same through Split.mask_rows, from disk, from a list in memory and from an array.
    in_memory = Split(split.images[:], split.labels, split.boxes, masks, split.names, split.sizes)
    same_size = Split(split.images[:], split.labels, masks=np.stack([m[:12, :20] for m in masks]))
    rows = np.array([9, 1, 1])
    for a, b, c in zip(split.mask_rows(rows), in_memory.mask_rows(rows), same_size.mask_rows(rows)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[:12, :20], c)
    assert [m.shape for m in in_memory.subset(rows).mask_rows([2, 0])] == [(13, 21), (13, 29)]


def test_subset_is_a_view_and_records_pickle(stored):
    split, images, masks, _ = stored
    part = split.subset(np.array([7, 2, 9]))
    np.testing.assert_array_equal(part.images[:], images[[7, 2, 9]])
    for m, i in zip(part.subset(np.array([2, 0])).masks[:], [9, 7]):
        np.testing.assert_array_equal(m, masks[i])
    np.testing.assert_array_equal(part.original_sizes, [masks[i].shape[::-1] for i in (7, 2, 9)])
    assert part.names == ['img7', 'img2', 'img9']
    again = pickle.loads(pickle.dumps(part.images))  # what Grain's worker processes receive
    np.testing.assert_array_equal(again[1], images[2])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(part.masks))[0], masks[7])


def test_jpeg_codec_is_close_and_smaller(tmp_path):
    rng = np.random.default_rng(1)
    import cv2

    smooth = np.stack(
        [
            cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
            for _ in range(6)
        ]
    )
    smooth = np.clip(smooth + rng.normal(0, 3, smooth.shape), 0, 255).astype(np.uint8)  # photo-like: sensor noise
    masks, labels = list(np.zeros((6, 64, 64), np.uint8)), np.zeros(6, np.int64)
    raw = _write(tmp_path / 'raw', smooth, masks, labels, 'raw')
    jpeg = _write(tmp_path / 'jpeg', smooth, masks, labels, 'jpeg')
    assert np.abs(jpeg.images[:].astype(int) - smooth).mean() < 3
    np.testing.assert_array_equal(raw.images[:], smooth)
    assert all(len(records.encode_image(im, 'jpeg')) < im.nbytes / 2 for im in smooth)


def test_masks_only_when_every_sample_has_one(tmp_path):
    images, masks, labels = _samples(4)
    split = _write(tmp_path / 's', images, masks, labels, with_masks=False)
    assert split.masks is None and split.boxes is not None


def test_cache_is_built_once_atomically_and_cleans_up(tmp_path):
    images, masks, labels = _samples(5)
    folder = str(tmp_path / 'cache' / 'split-abc')
    calls = []

    def failing(writer):
        writer.add(images[0], 0, 'a')
        raise KeyboardInterrupt  # interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        records.cached(folder, 16, failing)
    assert os.listdir(tmp_path / 'cache') == []  # no half cache left, final or temporary
    stale = records._tmp_prefix(folder) + '999999999'  # a dead process's temporary folder
    os.makedirs(stale)

    def build(writer):
        calls.append(1)
        for i in range(5):
            writer.add(images[i], labels[i], str(i))
        return ['x: unreadable']

    first = records.cached(folder, 16, build)
    second = records.cached(folder, 16, build)
    assert len(calls) == 1 and not os.path.exists(stale) and os.listdir(tmp_path / 'cache') == ['split-abc']
    np.testing.assert_array_equal(second.images[:], first.images[:])
    assert second.boxes is None
    os.remove(os.path.join(folder, records.META))  # damaged by hand: stop, do not rebuild over it
    with pytest.raises(DataError, match='not a complete record cache.*delete it'):
        records.cached(folder, 16, build)


def test_writer_rejects_a_wrong_image_or_mask(tmp_path):
    writer = records.SplitWriter(str(tmp_path / 'w'), 16)
    with pytest.raises(ValueError, match=r'expected a \(16, 16, 3\) uint8 image'):
        writer.add(np.zeros((16, 16, 3), np.float32), 0, 'bad')
    with pytest.raises(ValueError, match=r'bad: the mask is 30x20 but the original image is 40x20'):
        writer.add(np.zeros((16, 16, 3), np.uint8), 0, 'bad', mask=np.zeros((20, 30), np.uint8), original_size=(40, 20))
    writer.abort()
    assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('threads', [1, 3])
def test_streamed_batches_equal_in_memory_batches(stored, threads):
    """The record-backed split and the same arrays in memory give identical global batches
    (train order, triplets, evaluation with padding), whatever the number of reader threads."""
    split, images, masks, labels = stored
    in_memory = Split(images, labels.astype(np.int32), split.boxes, masks, split.names)
    mesh = parallel.make_mesh()
    key = jax.random.key(4)
    for make in (classification_batches, triplet_batches):
        a = [jax.device_get(b) for b in make(split, 4, mesh, key, threads)]
        b = [jax.device_get(b) for b in make(in_memory, 4, mesh, key, 1)]
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x['image'], y['image'])
    seen = [(np.asarray(out[0]), idx) for out, idx in map_split(lambda b: b['image'], split, 4, mesh, threads)]
    assert [len(i) for _, i in seen] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([o[: len(i)] for o, i in seen]), images)


def test_shards_and_variable_box_counts(tmp_path, monkeypatch):
    """Records spread over several files (a writer's index is freed shard by shard) read back
    in any order; images with 0, 1 or 2 boxes are padded with PAD_BOX."""
    from wsol_jax.metrics import PAD_BOX

    monkeypatch.setattr(records, 'SHARD_SIZE', 4)
    images, masks, labels = _samples(11, seed=3)
    boxes = [np.array([[i, i, i + 5, i + 6]] * (i % 3)) for i in range(11)]

    def build(writer):
        for i in range(11):
            writer.add(images[i], labels[i], str(i), boxes[i], masks[i], masks[i].shape[::-1])
        return []

    split = records.cached(str(tmp_path / 's'), 16, build)
    assert sorted(os.listdir(tmp_path / 's')) == [
        'images-00000.array_record',
        'images-00001.array_record',
        'images-00002.array_record',
        'masks-00000.array_record',
        'masks-00001.array_record',
        'masks-00002.array_record',
        'meta.npz',
    ]
    order = np.array([10, 0, 5, 4, 3, 9, 9])
    np.testing.assert_array_equal(split.images[order], images[order])
    for m, i in zip(split.subset(order).masks[:], order):
        np.testing.assert_array_equal(m, masks[i])
    assert split.boxes.shape == (11, 2, 4)
    for i in range(11):
        k = i % 3
        np.testing.assert_array_equal(split.boxes[i, :k], boxes[i].reshape(-1, 4))
        assert (split.boxes[i, k:] == PAD_BOX).all()
