"""Every on-disk format, through the loader a real run uses (`load_dataset`), on fixtures written
in that format: labels, boxes (hand-checked after the 256/224 transform), masks, splits, errors."""

import csv
import os
import stat

import cv2
import numpy as np
import pytest
from PIL import Image

import fixtures
from helpers import load_config
from wsol_jax.data import decode, formats, images, load_dataset
from wsol_jax import wsolevaluation
from wsol_jax.data.dataset import cache_boxes, crop_protocol_boxes
from wsol_jax.errors import ConfigError, DataError


TINY_RESNET = 'resnet_tiny_test'  # the tiny preset's networks in the runs below: the formats are what is tested


def _config(name, root, **data):
    c = load_config(name, 'method1')
    c.data.root = str(root)
    c.data.update(data)
    return c


def test_cub_layout_and_hand_checked_box(tmp_path):
    meta = fixtures.write_cub(tmp_path / 'CUB_200_2011')
    data = load_dataset(
        _config('cub', tmp_path / 'CUB_200_2011', num_val=2, num_classes=0), cache_dir=str(tmp_path / 'cache')
    )
    assert data.num_classes == 4
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 12 and len(data.val) == 2
    # Image 1 is 320x240 with box x=32, y=48, w=160, h=96 -> [32, 48, 192, 144], kept so;
    # the crop protocol: resized to 256: x * 0.8, y * 256/240 -> [25.6, 51.2, 153.6, 153.6] -> [26, 51, 154, 154];
    # centre crop 224 (offset 16): [10, 35, 138, 138].
    # wsolevaluation's: int(x * 224 / 320), int(y * 224 / 240) -> [22.4, 44.8, 134.4, 134.4] -> [22, 44, 134, 134].
    # Its image id is its images.txt path.
    where = data.train if meta[1][0] in data.train.names else data.val
    i = where.names.index(meta[1][0])
    np.testing.assert_array_equal(where.boxes[i, 0], [32, 48, 192, 144])
    np.testing.assert_array_equal(where.original_sizes[i], [320, 240])
    np.testing.assert_array_equal(
        cache_boxes(where.boxes[i : i + 1], where.original_sizes[i : i + 1], 256)[0, 0], [26, 51, 154, 154]
    )
    np.testing.assert_array_equal(crop_protocol_boxes(where, [i], 224)[0, 0], [10, 35, 138, 138])
    np.testing.assert_array_equal(
        wsolevaluation.resize_boxes(where.boxes[i : i + 1], where.original_sizes[i : i + 1])[0, 0], [22, 44, 134, 134]
    )
    assert where.labels[i] == 0
    # Labels and masks (at the original resolution) of the test split agree with the files.
    for k, name in enumerate(data.test.names):
        (image_id,) = [j for j, m in meta.items() if m[0] == name]
        assert data.test.labels[k] == meta[image_id][1] and meta[image_id][3] == 0
        mask = data.test.masks[k]
        x0, y0, x1, y1 = meta[image_id][2]
        assert mask.shape == (240, 320) and mask[y0:y1, x0:x1].all() and mask.sum() == (x1 - x0) * (y1 - y0)


def _small_cub(tmp_path, **data):
    """A CUB fixture of 8 images (ids 1-8, line k of every file is id k; ids 3, 4, 7, 8 are
    test images) and its config with 1 held-out image."""
    root = tmp_path / 'cub'
    meta = fixtures.write_cub(root, num_classes=2, per_class=4)
    return root, meta, _config('cub', root, num_val=1, num_classes=0, **data)


def _names(data):
    return [n for split in (data.train, data.val, data.test) for n in split.names]


def test_decoded_cache_is_reused_until_a_file_changes(tmp_path, monkeypatch, capsys):
    root, meta, cfg = _small_cub(tmp_path, on_bad_sample='skip')
    cache = str(tmp_path / 'cache')
    victim, other = root / 'images' / meta[3][0], root / 'images' / meta[4][0]
    saved = victim.read_bytes()
    os.remove(victim)
    a = load_dataset(cfg, cache_dir=cache)
    assert len(a.test) == 3 and len(os.listdir(cache)) == 3
    # Nothing changed: read back without decoding, and the skip is still reported.
    monkeypatch.setattr(decode, '_decode', lambda *_: pytest.fail('decoded again'))
    capsys.readouterr()
    b = load_dataset(cfg, cache_dir=cache)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert '1 samples were skipped' in capsys.readouterr().out
    monkeypatch.undo()
    # The same records with on_bad_sample=error do not read the cache built with skip.
    cfg.data.on_bad_sample = 'error'
    with pytest.raises(DataError, match=f'image file not found: .*{victim.name}'):
        load_dataset(cfg, cache_dir=cache)
    cfg.data.on_bad_sample = 'skip'
    # Restored: decoded again and included.
    victim.write_bytes(saved)
    c = load_dataset(cfg, cache_dir=cache)
    assert len(c.test) == 4 and meta[3][0] in c.test.names  # ids: images.txt paths
    # Replaced by other pixels under the same name: decoded again.
    victim.write_bytes(other.read_bytes())
    d = load_dataset(cfg, cache_dir=cache)
    np.testing.assert_array_equal(
        d.test.images[d.test.names.index(meta[3][0])], d.test.images[d.test.names.index(meta[4][0])]
    )
    # Touched (same bytes, a later modification time): a new cache entry.
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    before = len(os.listdir(cache))
    load_dataset(cfg, cache_dir=cache)
    assert len(os.listdir(cache)) == before + 1


def test_cache_key_covers_what_the_arrays_depend_on(tmp_path):
    root, _, _ = _small_cub(tmp_path)
    records = formats.cub(str(root))[0]['test']
    key = decode._fingerprint(records, 256, 2, 'error')
    assert key == decode._fingerprint(records, 256, 2, 'error')
    assert key != decode._fingerprint(records, 256, 2, 'skip')
    assert key != decode._fingerprint(records, 128, 2, 'error')
    assert key != decode._fingerprint(records, 256, 3, 'error')
    os.remove(records[0].mask_path)  # a mask file counts too
    assert key != decode._fingerprint(records, 256, 2, 'error')


@pytest.mark.parametrize('how', ['truncate', 'random', 'empty'])
def test_broken_images_name_file_and_line_or_are_skipped(tmp_path, capsys, how):
    root, meta, cfg = _small_cub(tmp_path)
    victim = root / 'images' / meta[3][0]  # image id 3: line 3 of images.txt, a test image
    fixtures.damage(victim, how)
    if how == 'truncate':  # OpenCV decoded it: half grey, a libjpeg warning that names no file
        assert cv2.imread(str(victim)) is not None
    with pytest.raises(DataError, match=rf'cannot decode image .*{victim.name} \(listed in .*images.txt:3\): '):
        load_dataset(cfg)
    cfg.data.on_bad_sample = 'skip'
    data = load_dataset(cfg)
    assert len(_names(data)) == 7 and meta[3][0] not in _names(data)
    assert 'cub-test: skipped 1 of 4 samples' in capsys.readouterr().out


def test_truncated_png_image_and_mask(tmp_path, capsys):
    root, meta, cfg = _small_cub(tmp_path)
    mask = root / 'segmentations' / (meta[4][0][:-4] + '.png')
    fixtures.damage(mask, 'truncate')
    with pytest.raises(DataError, match=rf'cannot decode mask .*{mask.name} \(listed in .*images.txt:4\): .*truncated'):
        load_dataset(cfg)
    cfg.data.on_bad_sample = 'skip'
    assert len(load_dataset(cfg).test) == 3
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine, suffix='.png')
    fixtures.damage(mine / 'images' / 'val' / '002.png', 'truncate')
    with pytest.raises(DataError, match=r'cannot decode image .*002.png \(listed in .*val/class_labels.txt:3\)'):
        load_dataset(_config('custom', mine))


def test_boxes_outside_the_image_or_inverted(tmp_path, capsys):
    W, H = fixtures.W, fixtures.H
    root, meta, cfg = _small_cub(tmp_path)
    boxes_txt = root / 'bounding_boxes.txt'
    # One pixel beyond the border (CUB's x + w == W is inside): accepted and clipped.
    fixtures.set_line(boxes_txt, 3, f'3 {W - 100}.0 10.0 101.0 {H - 9}.0')
    data = load_dataset(cfg)
    k = data.test.names.index(meta[3][0])
    np.testing.assert_array_equal(data.test.boxes[k, 0], [220, 10, 320, 240])  # clipped to the image
    np.testing.assert_array_equal(
        cache_boxes(data.test.boxes[k : k + 1], data.test.original_sizes[k : k + 1], 256)[0, 0], [176, 11, 255, 255]
    )  # * 0.8, 256/240, clipped to 255
    for line, problem in (
        ('3 250.0 10.0 75.0 20.0', 'outside the image'),  # x1 = 325 > 320 + 1
        ('3 50.0 60.0 -10.0 20.0', r'inverted \(x0 > x1 or y0 > y1\)'),
        ('3 -5.0 60.0 10.0 20.0', 'outside the image'),
    ):
        fixtures.set_line(boxes_txt, 3, line)
        cfg.data.on_bad_sample = 'error'
        with pytest.raises(
            DataError,
            match=rf'bounding_boxes.txt:3: box .* of .*{meta[3][0]} is {problem} '
            rf'\(the image is {W}x{H}\); fix the annotation',
        ):
            load_dataset(cfg)
        cfg.data.on_bad_sample = 'skip'
        assert len(_names(load_dataset(cfg))) == 7
        assert 'cub-test: skipped 1 of 4 samples' in capsys.readouterr().out
    # Stanford Cars (1-based inclusive): x2 == W + 1 is tolerated, x2 == W + 2 is not.
    cars = tmp_path / 'cars'
    fixtures.write_cars(cars, edits={('train', 2): {'bbox_x2': np.uint16(W + 1)}})
    load_dataset(_config('cars', cars, num_val=1, num_classes=0))
    fixtures.write_cars(cars, edits={('train', 2): {'bbox_x2': np.uint16(W + 2)}})
    with pytest.raises(DataError, match=r'cars_train_annos.mat\[2\]: box .* is outside the image'):
        load_dataset(_config('cars', cars, num_val=1, num_classes=0))


def test_wsolevaluation_box_lines_and_image_sizes_are_checked(tmp_path):
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine)
    loc = mine / 'metadata' / 'val' / 'localization.txt'
    rel1 = fixtures.get_line(loc, 3).split(',')[0]  # line 3: image 1 (image 0 has two boxes)
    fixtures.set_line(loc, 3, f'{rel1},200,10,100,50')
    with pytest.raises(
        DataError,
        match=r'val/localization.txt:3: box \[x0, y0, x1, y1\] = \[200, 10, 100, 50\] '
        r'.*inverted',
    ):
        load_dataset(_config('custom', mine))
    fixtures.set_line(loc, 3, f'{rel1},10,10,100,50')
    sizes = mine / 'metadata' / 'test' / 'image_sizes.txt'
    rel = fixtures.get_line(sizes, 2).split(',')[0]
    fixtures.set_line(sizes, 2, f'{rel},300,240')  # the file is 320x240: its boxes would be off
    with pytest.raises(DataError, match=rf'test/image_sizes.txt:2: lists .*{rel} as 300x240 but the file is 320x240'):
        load_dataset(_config('custom', mine))
    fixtures.set_line(loc, 8, 'images/val/nope.jpg,1,2,3,4')
    with pytest.raises(DataError, match=r'val/localization.txt:8: images/val/nope.jpg is not in image_ids.txt'):
        load_dataset(_config('custom', mine))


def test_test_label_never_seen_in_training_is_an_error(tmp_path):
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine)
    for split in ('test', 'val'):
        labels = mine / 'metadata' / split / 'class_labels.txt'
        line = fixtures.get_line(labels, 2)
        fixtures.set_line(labels, 2, line.split(',')[0] + ',7')
        with pytest.raises(
            DataError,
            match=rf'{split}/class_labels.txt:2: label 7 of .* \({split} split\) never '
            'occurs in the training split',
        ):
            load_dataset(_config('custom', mine))
        fixtures.set_line(labels, 2, line)
    # A hold-out val is part of train: only the test split is checked then.
    root, _, cfg = _small_cub(tmp_path)
    fixtures.set_line(root / 'image_class_labels.txt', 3, '3 9')
    with pytest.raises(
        DataError,
        match=r"image_class_labels.txt:3: label 8 of .*Bird_0_0002.jpg \(test split\) "
        "never occurs",
    ):
        load_dataset(cfg)


def test_images_listed_twice_are_errors(tmp_path):
    root, meta, cfg = _small_cub(tmp_path)
    images = root / 'images.txt'
    fixtures.set_line(images, 9, fixtures.get_line(images, 3))  # id 3 again
    with pytest.raises(DataError, match=r'images.txt:9: 3 is listed twice \(also at .*images.txt:3\)'):
        load_dataset(cfg)
    fixtures.set_line(images, 9, f'9 {meta[3][0]}')  # the path of id 3 under a new id
    for name, line in (
        ('image_class_labels.txt', '9 1'),
        ('train_test_split.txt', '9 0'),
        ('bounding_boxes.txt', '9 1.0 1.0 10.0 10.0'),
    ):
        fixtures.set_line(root / name, 9, line)
    with pytest.raises(
        DataError,
        match=rf'images.txt:9: .*{meta[3][0]} is listed twice in the test split '
        r'\(also at .*images.txt:3\)',
    ):
        load_dataset(cfg)
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine)
    ids = mine / 'metadata' / 'train' / 'image_ids.txt'
    fixtures.set_line(ids, 7, fixtures.get_line(ids, 2))
    with pytest.raises(
        DataError,
        match=r'train/image_ids.txt:7: images/train/001.jpg is listed twice \(also at '
        r'.*train/image_ids.txt:2\)',
    ):
        load_dataset(_config('custom', mine))
    flowers = tmp_path / 'flowers'
    fixtures.write_flowers(flowers, setid={'trnid': [1, 4, 7, 1]})
    with pytest.raises(DataError, match=r'setid.mat:trnid\[3\]: .*image_00001.jpg is listed twice in the train split'):
        load_dataset(_config('flowers', flowers))
    tiny = tmp_path / 'tiny'
    fixtures.write_tiny_imagenet(tiny)
    fixtures.set_line(tiny / 'wnids.txt', 4, fixtures.get_line(tiny / 'wnids.txt', 1))
    with pytest.raises(DataError, match=r'wnids.txt:4: class n01443537 is listed twice'):
        load_dataset(_config('tiny_imagenet', tiny, num_val=2))


def _cub_field(tmp_path, name, line):
    root = tmp_path / 'cub'
    fixtures.write_cub(root, num_classes=2, per_class=4)
    fixtures.set_line(root / name, 3, line)
    return _config('cub', root, num_val=1, num_classes=0)


def _cars_field(tmp_path, field, value):
    fixtures.write_cars(tmp_path / 'cars', edits={('test', 2): {field: value}})
    return _config('cars', tmp_path / 'cars', num_val=1, num_classes=0)


def _flowers_labels(tmp_path):
    fixtures.write_flowers(tmp_path / 'flowers', label_values=np.array([1, 1, 1, 2, 2, 2.5, 3, 3, 3, 1, 1, 1]))
    return _config('flowers', tmp_path / 'flowers')


def _tiny_box(tmp_path):
    fixtures.write_tiny_imagenet(tmp_path / 'tiny')
    path = tmp_path / 'tiny' / 'val' / 'val_annotations.txt'
    fields = fixtures.get_line(path, 2).split('\t')
    fixtures.set_line(path, 2, '\t'.join(fields[:2] + ['abc'] + fields[3:]))
    return _config('tiny_imagenet', tmp_path / 'tiny', num_val=2)


def _wsol_line(tmp_path, name, make):
    fixtures.write_wsolevaluation(tmp_path / 'mine')
    path = tmp_path / 'mine' / 'metadata' / 'test' / name
    fixtures.set_line(path, 2, make(fixtures.get_line(path, 2).split(',')))
    return _config('custom', tmp_path / 'mine')


# (config with one broken field, the error, whether on_bad_sample=skip drops the sample instead)
BAD_FIELDS = {
    'cub label': (
        lambda t: _cub_field(t, 'image_class_labels.txt', '3 abc'),
        r"image_class_labels.txt:3: class label 'abc' is not an integer",
        False,
    ),
    'cub split flag': (
        lambda t: _cub_field(t, 'train_test_split.txt', '3 2'),
        r"train_test_split.txt:3: is_training_image must be 1 \(train\) or 0 \(test\), got '2'",
        False,
    ),
    'cub box': (
        lambda t: _cub_field(t, 'bounding_boxes.txt', '3 10.0 abc 30.0 40.0'),
        r"bounding_boxes.txt:3: box field 'abc' is not a number",
        True,
    ),
    'cars class': (
        lambda t: _cars_field(t, 'class', 'abc'),
        r"cars_test_annos_withlabels.mat\[2\]: class 'abc' is not an integer",
        False,
    ),
    'cars box': (
        lambda t: _cars_field(t, 'bbox_y1', 'abc'),
        r"cars_test_annos_withlabels.mat\[2\]: box field 'abc' is not a number",
        True,
    ),
    'flowers label': (_flowers_labels, r'imagelabels.mat:labels\[5\]: label .*2.5.* is not an integer', False),
    'tiny_imagenet box': (_tiny_box, r"val_annotations.txt:2: box field 'abc' is not a number", True),
    'wsolevaluation label': (
        lambda t: _wsol_line(t, 'class_labels.txt', lambda f: f'{f[0]},abc'),
        r"test/class_labels.txt:2: class label 'abc' is not an integer",
        False,
    ),
    'wsolevaluation box': (
        lambda t: _wsol_line(t, 'localization.txt', lambda f: f'{f[0]},1,2,x,4'),
        r"test/localization.txt:2: box field 'x' is not a number",
        True,
    ),
    'wsolevaluation size': (
        lambda t: _wsol_line(t, 'image_sizes.txt', lambda f: f'{f[0]},320.5,240'),
        r'test/image_sizes.txt:2: image size .* is not a pair of integers',
        True,
    ),
}


@pytest.mark.parametrize('case', sorted(BAD_FIELDS))
def test_unparseable_fields_name_file_and_line(tmp_path, case):
    make, message, skippable = BAD_FIELDS[case]
    cfg = make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(cfg)
    cfg.data.on_bad_sample = 'skip'
    if skippable:  # a per-sample problem: that sample is dropped
        data = load_dataset(cfg)
        assert len(data.test) == {'cub': 3, 'cars': 5, 'tiny_imagenet': 5, 'wsolevaluation': 5}[cfg.data.source]
    else:  # a structural one: the listing itself is doubtful, skip does not hide it
        with pytest.raises(DataError, match=message):
            load_dataset(cfg)


def test_a_decode_error_stops_its_threads_before_it_propagates(tmp_path):
    """The decoding threads are joined by the time the error arrives, not left to the garbage
    collector: a pool shut down from inside `threading`'s bookkeeping deadlocked CI."""
    import gc
    import threading

    cv2.imwrite(str(tmp_path / 'ok.png'), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    records = [
        decode.Record(str(tmp_path / name), 0, np.zeros((0, 4)), source=f'list.txt:{i + 1}')
        for i, name in enumerate(['ok.png'] * 40 + ['bad.png'] + ['ok.png'] * 40)
    ]

    class Writer:
        def __init__(self):
            self.n = 0

        def add(self, *args):
            self.n += 1

        def __len__(self):
            return self.n

    gc.disable()  # what the fix must not rely on
    try:
        before = threading.active_count()
        with pytest.raises(DataError, match='bad.png') as raised:
            decode.decode_into(Writer(), records, 8, 1, workers=4)
        assert threading.active_count() == before, 'decoding threads outlived the error'
        del raised
    finally:
        gc.enable()
    writer = Writer()
    assert len(decode.decode_into(writer, records, 8, 1, on_bad_sample='skip', workers=4)) == 1
    assert len(writer) == 80


def test_cub_errors_name_the_file(tmp_path):
    root = tmp_path / 'cub'
    fixtures.write_cub(root)
    cfg = _config('cub', root, num_val=2, num_classes=0)
    victim = sorted((root / 'images').rglob('*.jpg'))[-1]
    victim.write_bytes(b'not a jpeg')
    with pytest.raises(DataError, match=f'cannot decode image .*{victim.name}.*images.txt:'):
        load_dataset(cfg)
    cfg.data.on_bad_sample = 'skip'
    data = load_dataset(cfg)
    assert len(data.train) + len(data.val) + len(data.test) == 23
    os.remove(root / 'bounding_boxes.txt')
    with pytest.raises(DataError, match='bounding_boxes.txt not found; config.data.root must point'):
        load_dataset(cfg)


def test_missing_root_and_bad_labels(tmp_path):
    with pytest.raises(DataError, match='is not a directory'):
        load_dataset(_config('cub', tmp_path / 'nowhere'))
    root = tmp_path / 'cub'
    fixtures.write_cub(root)
    with pytest.raises(
        DataError,
        match=r'image_class_labels.txt:13: label 2 \(0-based\) of .*Bird_2_0000.jpg is '
        r'outside \[0, 2\)',
    ):
        load_dataset(_config('cub', root, num_val=2, num_classes=2))
    with pytest.raises(ConfigError, match='num_val'):
        load_dataset(_config('cub', root, num_val=100, num_classes=0))


def test_stanford_cars_devkit(tmp_path):
    meta = fixtures.write_cars(tmp_path / 'cars')
    data = load_dataset(_config('cars', tmp_path / 'cars', num_val=1, num_classes=0))
    assert data.num_classes == 3 and len(data.test) == 6
    for k, name in enumerate(data.test.names):
        assert name.startswith('cars_test/')
        label, box = meta[('test', os.path.basename(name))]
        assert data.test.labels[k] == label
        np.testing.assert_array_equal(data.test.boxes[k, 0], box)  # [x1 - 1, y1 - 1, x2, y2] of the 1-based box


def test_oxford_flowers_masks_and_splits(tmp_path):
    labels, boxes = fixtures.write_flowers(tmp_path / 'flowers')
    data = load_dataset(_config('flowers', tmp_path / 'flowers'))
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    for k, name in enumerate(data.test.names):
        assert name == f'jpg/image_{int(name[-9:-4]):05d}.jpg'
        i = int(name[-9:-4])
        assert data.test.labels[k] == labels[i - 1]
        x0, y0, x1, y1 = boxes[i]
        # The box is the mask's bounding rectangle in the original pixels (its JPEG edges: within 1 px).
        assert np.abs(data.test.boxes[k, 0] - [x0, y0, x1, y1]).max() <= 1
        mask = data.test.masks[k]
        assert mask.shape == (240, 320) and mask.mean() == pytest.approx((x1 - x0) * (y1 - y0) / (320 * 240), abs=0.01)


def test_tiny_imagenet_layout(tmp_path):
    meta = fixtures.write_tiny_imagenet(tmp_path / 'tiny')
    data = load_dataset(_config('tiny_imagenet', tmp_path / 'tiny', num_val=2))
    assert data.num_classes == 200  # the config's; the fixture uses 3 of the 200 ids
    assert len(data.train) == 10 and len(data.val) == 2 and len(data.test) == 6
    assert data.test.images.shape[1:] == (64, 64, 3)
    for k, name in enumerate(data.test.names):
        assert name == f'val/images/{os.path.basename(name)}'
        label, box = meta[os.path.basename(name)]
        assert data.test.labels[k] == label
        np.testing.assert_array_equal(data.test.boxes[k, 0], box)
        cached = cache_boxes(data.test.boxes[k : k + 1], data.test.original_sizes[k : k + 1], 64)
        np.testing.assert_array_equal(cached[0, 0], np.round(np.array(box) * [0.2, 64 / 240, 0.2, 64 / 240]))


def test_wsolevaluation_metadata_with_several_boxes_and_masks(tmp_path):
    meta = fixtures.write_wsolevaluation(tmp_path / 'mine', masks_for_test=True)
    data = load_dataset(_config('custom', tmp_path / 'mine'))
    assert data.num_classes == 3 and (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)
    first = data.val.boxes[0]
    assert (first[:, 0] >= 0).sum() == 2  # two boxes for the first image
    assert data.test.masks is not None and data.val.masks is None
    for k, name in enumerate(data.val.names):  # ids: the paths image_ids.txt lists
        assert data.val.labels[k] == meta[name][0]


def test_wsolevaluation_masks_of_one_image_are_united(tmp_path):
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine, masks_for_test=True)
    cfg = _config('custom', mine)
    k = 0  # test image 000.jpg, the first line of test/localization.txt
    alone = load_dataset(cfg).test.masks[k].astype(bool)
    corner = np.zeros((fixtures.H, fixtures.W), np.uint8)
    corner[:30, :40] = 255  # a second object in the corner (the fixture's objects start at x, y >= 10)
    cv2.imwrite(str(mine / 'masks' / 'test' / '000b.png'), corner)
    fixtures.set_line(mine / 'metadata' / 'test' / 'localization.txt', 7, 'images/test/000.jpg,masks/test/000b.png,')
    united = load_dataset(cfg).test.masks[k].astype(bool)
    assert (united >= alone).all() and united[:30, :30].all() and united.sum() > alone.sum()


def _file_states(*roots):
    return {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
        for root in roots
        for d, _, fs in os.walk(root)
        for f in fs
    }


def _tree(*roots):
    """Every folder and file under `roots` (the roots included): its kind, size and modification
    time. A new file or folder (an empty one too) is a new entry; a file or folder made and removed
    again changes its folder's modification time."""
    out = {}
    for root in roots:
        for d, dirs, fs in os.walk(root):
            for path in [d] + [os.path.join(d, n) for n in dirs + fs]:
                st = os.lstat(path)
                out[path] = (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_mtime_ns)
    return out


def test_openimages_layout_runs_every_stage_with_saved_maps_on_a_read_only_copy(tmp_path, monkeypatch):
    """configs/openimages.py on a fixture in wsolevaluation's OpenImages layout, read-only and given
    by a relative root: instance masks united, ignore regions stored as IGNORE (only outside
    objects), at the original resolution; every stage with eval.save_maps writes one scoremap per
    image id of test/image_ids.txt into <workdir>/scoremaps, their metadata and masks beside it;
    export and predict (on the test images under the data root) follow, and no stage writes
    anything under the data root: no file, no folder, not even one made and removed again (the
    tests run as root, whom the read-only modes do not stop: the tree listing is the check). The
    saved ground truth, read as their evaluation.py reads it (tests/helpers.py), gives the numbers
    wsol-jax reports for the saved maps."""
    from helpers import read_wsolevaluation_ground_truth
    from wsol_jax import metrics, run as run_lib, workdir as workdir_lib
    from wsol_jax.data import load_dataset

    expected = fixtures.write_openimages(str(tmp_path / 'OpenImages'), str(tmp_path / 'metadata' / 'OpenImages'))
    for d, dirs, fs in os.walk(tmp_path):
        for name in dirs + fs:
            path = os.path.join(d, name)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _tree(tmp_path / 'OpenImages', tmp_path / 'metadata')
    monkeypatch.chdir(tmp_path)
    cfg = load_config('openimages', 'method1')
    cfg.data.update(
        dict(root='OpenImages', metadata_dir='metadata/OpenImages', num_classes=2, image_size=32, crop_size=32)
    )
    cfg.f.update(dict(arch=TINY_RESNET, width=0.125, max_epochs=1, batch_size=2, pretrained='none', allow_weak=True))
    cfg.g.update(dict(depth=TINY_RESNET, width=0.125, max_epochs=1, batch_size=2, pretrained='none'))
    cfg.eval.update(dict(batch_size=2, max_coverage=1.0, num_overlays=2, strip_images=2, num_workers=1, save_maps=True))
    workdir = str(tmp_path / 'run')
    try:
        data = load_dataset(cfg, cache_dir=str(tmp_path / 'cache'))
        for i, name in enumerate(data.test.names):
            _, obj, ignore = expected[name]
            want = np.where(obj, 1, np.where(ignore, metrics.IGNORE, 0)).astype(np.uint8)
            np.testing.assert_array_equal(data.test.masks[i], want)
        results = run_lib.run(cfg, workdir)
        run_lib.run(cfg, workdir, 'export')
        cfg.predict.update(dict(images='OpenImages/test/*/*.jpg', model=os.path.join(workdir, workdir_lib.EXPORT)))
        run_lib.run(cfg, workdir, 'predict')
    finally:
        for d, dirs, fs in os.walk(tmp_path):
            for name in dirs + fs:
                os.chmod(os.path.join(d, name), 0o755)
    assert _tree(tmp_path / 'OpenImages', tmp_path / 'metadata') == before  # nothing written there
    with open(os.path.join(workdir, workdir_lib.PREDICTIONS, 'predictions.csv'), newline='') as fh:
        rows = list(csv.DictReader(fh))
    predicted = sorted(os.path.relpath(os.path.abspath(row['path']), tmp_path / 'OpenImages') for row in rows)
    assert predicted == sorted(expected)  # every test image, read from the data root
    assert 0 <= results['weight_map_selected']['pxap'] <= 1
    with open(tmp_path / 'metadata' / 'OpenImages' / 'test' / 'image_ids.txt') as fh:
        ids = fh.read().split()
    scoremaps = os.path.join(workdir, workdir_lib.SCOREMAPS)
    assert sorted(os.path.relpath(p, scoremaps) for p in _file_states(scoremaps)) == sorted(i + '.npy' for i in ids)
    their_ids, boxes, masks = read_wsolevaluation_ground_truth(
        os.path.join(workdir, workdir_lib.WSOLEVAL_METADATA), os.path.join(workdir, workdir_lib.WSOLEVAL_MASKS)
    )
    assert their_ids == ids and set(boxes) == set(masks) == set(ids)
    for image_id, (_, obj, ignore) in expected.items():  # the masks as they read them: theirs, resized once
        want = np.where(obj, 1, np.where(ignore, metrics.IGNORE, 0)).astype(np.uint8)
        np.testing.assert_array_equal(masks[image_id], cv2.resize(want, (224, 224), interpolation=cv2.INTER_NEAREST))
    maps = np.stack([np.load(os.path.join(scoremaps, i + '.npy')) for i in ids])
    acc = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious))
    acc.update(maps, [boxes[i] for i in ids])
    read_back = {**acc.result(), 'pxap': metrics.pxap(maps, np.stack([masks[i] for i in ids]), cfg.eval.pxap_interval)}
    assert read_back == results['weight_map_selected_wsolevaluation']


def test_class_names_where_the_dataset_ships_them(tmp_path):
    from wsol_jax.data import class_names

    (tmp_path / 'classes.txt').write_text('2 002.Laysan_Albatross\n1 001.Black_footed_Albatross\n')
    assert class_names.read('cub', str(tmp_path)) == ['Black_footed_Albatross', 'Laysan_Albatross']
    (tmp_path / 'wnids.txt').write_text('n01443537\nn01629819\n')
    (tmp_path / 'words.txt').write_text('n01443537\tgoldfish, Carassius auratus\n')
    assert class_names.read('tiny_imagenet', str(tmp_path)) == ['goldfish', 'n01629819']
    assert class_names.read('cars', str(tmp_path)) is None


def test_ilsvrc_layout_runs_every_stage_through_the_jpeg_cache(tmp_path):
    """configs/imagenet.py on a fixture in wsolevaluation's ILSVRC layout (ImageNetV2 as val,
    ILSVRC2012 val as test, several boxes per image), through the JPEG record cache that the
    config sets: boxes kept as listed, every stage runs."""
    import fixtures
    from helpers import load_config
    from wsol_jax import run as run_lib
    from wsol_jax.data import load_dataset

    root, meta = tmp_path / 'ILSVRC', tmp_path / 'metadata' / 'ILSVRC'
    expected = fixtures.write_ilsvrc(str(root), str(meta))
    cfg = load_config('imagenet', 'method1')
    assert cfg.data.cache_codec == 'jpeg' and cfg.f.arch == cfg.g.depth == 'resnet50'
    cfg.data.update(dict(root=str(root), metadata_dir=str(meta), num_classes=3, image_size=32, crop_size=32))
    cfg.f.update(dict(arch=TINY_RESNET, width=0.125, max_epochs=1, batch_size=2, pretrained='none', allow_weak=True))
    cfg.g.update(dict(depth=TINY_RESNET, width=0.125, max_epochs=1, batch_size=2, pretrained='none'))
    cfg.eval.update(dict(batch_size=4, max_coverage=1.0, num_overlays=2, strip_images=2, num_workers=1))
    data = load_dataset(cfg, cache_dir=str(tmp_path / 'cache'))
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)
    for k, name in enumerate(data.test.names):  # ids: the listed paths; boxes: the listed pixels
        label, boxes = expected[name]
        assert data.test.labels[k] == label
        np.testing.assert_array_equal(data.test.boxes[k][: len(boxes)], boxes)
    first = data.test.names.index('val/ILSVRC2012_val_00000001.JPEG')
    assert (data.test.boxes[first] >= 0).all(axis=1).sum() == 2  # both objects of the first image
    results = run_lib.run(cfg, str(tmp_path / 'run'))
    assert 0 <= results['weight_map_selected']['maxboxacc_v2'] <= 1 and 'top5_loc' in results['cam']


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _mode_cases(tmp_path):
    """(file, expected RGB pixels of its one row), each written by Pillow in its mode."""

    def save(name, image, **kw):
        image.save(tmp_path / name, **kw)
        return tmp_path / name

    def grey(*values):
        return np.repeat(np.array([values], np.uint8)[..., None], 3, axis=-1)

    u16 = np.array([[0, 257, 32896, 65535]], np.uint16)
    palette = Image.new('P', (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    one = Image.new('1', (2, 1))
    one.putpixel((1, 0), 1)
    pgm = tmp_path / 'max1000.pgm'  # 16-bit PGM, maxval 1000: Pillow scales it to 0-65535 (mode I)
    pgm.write_bytes(b'P5 4 1 1000\n' + np.array([0, 500, 1000, 250], '>u2').tobytes())
    la = np.array([[[200, 128], [10, 0], [50, 255]]], np.uint8)
    rgba = np.array([[[200, 0, 0, 128], [0, 0, 255, 255]]], np.uint8)
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [100, 50, 0, 100]]], np.uint8)
    # 16 bits: round(v * 255 / 65535); I beyond 16 bits and F beyond [0, 1]: min-max to 0-255;
    # F in [0, 1]: round(v * 255); alpha over white: p * a / 255 + 255 * (1 - a / 255), rounded;
    # CMYK as Pillow: (255 - C)(255 - K) / 255 (100, 50, 0, 100 -> 155 * 155 / 255 = 94.2, 124.6, 155)
    return {
        'I;16 png': (save('g16.png', Image.fromarray(u16)), grey(0, 1, 128, 255)),
        'I;16B tiff': (save('g16b.tif', Image.fromarray(u16.astype('>u2'))), grey(0, 1, 128, 255)),
        'I pgm': (pgm, grey(0, 128, 255, 64)),
        'I beyond 16 bits': (
            save('i32.tif', Image.fromarray(np.array([[-100, 0, 100, 300]], np.int32))),
            grey(0, 64, 128, 255),
        ),  # (v + 100) * 255 / 400
        'F in [0, 1]': (
            save('f.tif', Image.fromarray(np.array([[0, 0.5, 1, 0.25]], np.float32))),
            grey(0, 128, 255, 64),
        ),
        'F beyond [0, 1]': (
            save('f2.tif', Image.fromarray(np.array([[-1, 0, 1, 3]], np.float32))),
            grey(0, 64, 128, 255),
        ),  # (v + 1) * 255 / 4
        '1': (save('one.png', one), grey(0, 255)),
        'LA': (save('la.png', Image.fromarray(la, 'LA')), grey(227, 255, 50)),  # 200 * 128/255 + 127 = 227.4
        'L with a transparent value': (
            save('lt.png', Image.fromarray(np.array([[5, 6]], np.uint8)), transparency=6),
            grey(5, 255),
        ),
        'I;16 with a transparent value': (
            save('g16t.png', Image.fromarray(u16), transparency=257),
            grey(0, 255, 128, 255),
        ),
        'P with transparency': (save('p.png', palette, transparency=1), np.array([[[255, 0, 0], [255, 255, 255]]])),
        'RGBA': (save('rgba.png', Image.fromarray(rgba, 'RGBA')), np.array([[[227, 127, 127], [0, 0, 255]]])),
        'CMYK': (
            save('cmyk.tif', Image.fromarray(cmyk, 'CMYK')),
            np.array([[[255, 255, 255], [0, 255, 255], [0, 0, 0], [94, 125, 155]]]),
        ),
    }


def test_every_image_mode_reads_as_the_hand_computed_pixels(tmp_path):
    """16-bit and float files scaled (Pillow's convert('RGB') clips them: 257 -> 255), 32-bit and
    out-of-range ones stretched, transparency over white, CMYK, bilevel, palettes."""
    for case, (path, expected) in _mode_cases(tmp_path).items():
        pixels = images.read_image(str(path))
        assert pixels.dtype == np.uint8 and pixels.shape == expected.shape, case
        np.testing.assert_array_equal(pixels, expected, err_msg=case)


def test_16_bit_masks_keep_their_meaning(tmp_path):
    for values, expected in (
        ([0, 1, 1, 0], [0, 1, 1, 0]),  # a 0/1 mask
        ([0, 65535, 32768, 32767], [0, 1, 1, 0]),
    ):  # above half of 16 bits
        Image.fromarray(np.array([values], np.uint16)).save(tmp_path / 'm.png')
        np.testing.assert_array_equal(images.read_mask(str(tmp_path / 'm.png'), 'binary'), [expected])


def test_exif_orientation_is_applied_only_where_the_listed_size_is_the_upright_one(tmp_path):
    """The protocols read stored pixels (their boxes are in that frame); a listed size that is
    only the upright one means the annotations were made on the upright image."""
    rng = np.random.default_rng(0)
    upright = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)  # 40 wide, 24 high
    Image.fromarray(upright).transpose(Image.ROTATE_90).save(tmp_path / 'o6.png', exif=_exif(6))
    Image.fromarray(upright).transpose(Image.ROTATE_180).save(tmp_path / 'o3.png', exif=_exif(3))
    path = str(tmp_path / 'o6.png')
    stored = images.read_image(path)
    np.testing.assert_array_equal(stored, np.rot90(upright))  # stored: turned counter-clockwise
    np.testing.assert_array_equal(images.read_image(path, listed_size=(40, 24)), upright)
    np.testing.assert_array_equal(images.read_image(path, listed_size=(24, 40)), stored)
    np.testing.assert_array_equal(images.read_image(path, upright=True), upright)
    o3 = str(tmp_path / 'o3.png')  # a half turn keeps the size: the listed size cannot tell, stored it is
    np.testing.assert_array_equal(images.read_image(o3, listed_size=(40, 24)), upright[::-1, ::-1])
    np.testing.assert_array_equal(images.read_image(o3, upright=True), upright)


def test_wsolevaluation_image_listed_upright_but_stored_turned_loads_as_the_upright_one(tmp_path):
    mine = tmp_path / 'mine'
    fixtures.write_wsolevaluation(mine, suffix='.png')
    before = load_dataset(_config('custom', mine), cache_dir=str(tmp_path / 'c1')).test
    rel = fixtures.get_line(mine / 'metadata' / 'test' / 'image_sizes.txt', 2).split(',')[0]  # listed 320x240
    image = Image.open(mine / rel)
    image.transpose(Image.ROTATE_90).save(mine / rel, exif=_exif(6))  # stored 240x320, shown 320x240
    after = load_dataset(_config('custom', mine), cache_dir=str(tmp_path / 'c2')).test
    np.testing.assert_array_equal(after.images[:], before.images[:])
    np.testing.assert_array_equal(after.boxes[:], before.boxes[:])
