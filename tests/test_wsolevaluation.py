"""wsol-jax against clovaai/wsolevaluation: the files its evaluation.py reads, and its numbers.

The golden files in tests/golden/ were produced by `benchmarks/wsoleval_golden.py
--wsolevaluation=<checkout of clovaai/wsolevaluation at 96f4b88>`: two small wsol-jax runs at
32 px through every stage with `--config.eval.save_maps=True` (the synthetic set, 32 test images;
tests/fixtures.write_openimages, 32 test images of 320x240 with instance masks and ignore regions
in their OpenImages layout). Each scoremap (g's 32 px map, resized x7 and min-max normalised) was
reduced to its 32 x 32 normalised map in uint8 and upsampled x7 again by exact integer bilinear
interpolation (`helpers.golden_maps`, within 1/510 of the run's scoremap); their unmodified
evaluation.py (numpy 2 with `np.float = float` patched in, minimal stand-ins for the munch and
torchvision imports it never uses for evaluation) scored those float32 .npy files against the
metadata and masks that wsol-jax wrote beside the scoremaps. The .npz files hold the uint8 maps
and the ground truth in the original image's pixels (boxes, `(width, height)`, masks with 255 =
ignored); wsolevaluation.json holds their numbers and the exact commands. For the OpenImages
fixture their PxAP from the fixture's own metadata and mask files was the same number as from the
files wsol-jax wrote.
"""

import json
import os

import cv2
import numpy as np
import pytest

from helpers import golden_maps, read_wsolevaluation_ground_truth
from wsol_jax import metrics, wsolevaluation
from wsol_jax.data.dataset import Split, resize_masks
from wsol_jax.errors import DataError

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


def _hand_split():
    """Two images: 'a/0.jpg' 320x240 with a fractional box and a whole-image box, an object
    rectangle and an ignore corner; 'b.jpg' 50x40 with one box and an empty mask."""
    mask = np.zeros((240, 320), np.uint8)
    mask[30:60, 100:200] = 1
    mask[:10, :20] = metrics.IGNORE
    boxes = np.array([[[10.4, 20.6, 100, 50], [0, 0, 320, 240]], [[5, 6, 7, 8], metrics.PAD_BOX]], np.float64)
    return Split(
        np.zeros((2, 8, 8, 3), np.uint8),
        np.array([1, 0], np.int32),
        boxes,
        [mask, np.zeros((40, 50), np.uint8)],
        ['a/0.jpg', 'b.jpg'],
        np.array([[320, 240], [50, 40]]),
    )


def test_metadata_and_masks_in_their_layout_hand_checked(tmp_path):
    split = _hand_split()
    ids = wsolevaluation.image_ids(split)
    metadata, mask_root = str(tmp_path / 'metadata'), str(tmp_path / 'masks')
    trees = wsolevaluation.metadata_lines(split, ids)
    wsolevaluation.write_metadata(metadata, trees)
    wsolevaluation.write_masks(mask_root, ids, split.masks)
    read = lambda *p: (tmp_path / 'metadata' / os.path.join(*p)).read_text().splitlines()
    assert read('CUB', 'test', 'localization.txt') == ['a/0.jpg,10,21,100,50', 'a/0.jpg,0,0,320,240', 'b.jpg,5,6,7,8']
    assert read('OpenImages', 'test', 'localization.txt') == [
        'a/0.jpg,a/0.jpg_mask.png,a/0.jpg_ignore.png',
        'b.jpg,b.jpg_mask.png,b.jpg_ignore.png',
    ]
    for tree in ('CUB', 'OpenImages'):
        assert read(tree, 'test', 'image_ids.txt') == ['a/0.jpg', 'b.jpg']
        assert read(tree, 'test', 'class_labels.txt') == ['a/0.jpg,1', 'b.jpg,0']
        assert read(tree, 'test', 'image_sizes.txt') == ['a/0.jpg,320,240', 'b.jpg,50,40']
    obj = cv2.imread(str(tmp_path / 'masks' / 'OpenImages' / 'a/0.jpg_mask.png'), cv2.IMREAD_UNCHANGED)
    ignore = cv2.imread(str(tmp_path / 'masks' / 'OpenImages' / 'a/0.jpg_ignore.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(obj, (split.masks[0] == 1) * 255)  # original resolution, 0/255
    np.testing.assert_array_equal(ignore, (split.masks[0] == metrics.IGNORE) * 255)
    # As their loader reads them: int(x * 224 / W): 10 * 0.7 = 7, 21 * 224 / 240 = 19.6 -> 19, 70, 46.67 -> 46;
    # 22.4 -> 22, 33.6 -> 33, 31.36 -> 31, 44.8 -> 44.
    their_ids, boxes, masks = read_wsolevaluation_ground_truth(metadata, mask_root)
    assert their_ids == ids
    np.testing.assert_array_equal(boxes['a/0.jpg'], [[7, 19, 70, 46], [0, 0, 224, 224]])
    np.testing.assert_array_equal(boxes['b.jpg'], [[22, 33, 31, 44]])
    ours = wsolevaluation.resize_boxes(split.boxes, split.original_sizes)
    np.testing.assert_array_equal(ours, [[[7, 19, 70, 46], [0, 0, 224, 224]], [[22, 33, 31, 44], metrics.PAD_BOX]])
    for i, image_id in enumerate(ids):  # the mask resized once, nearest, ignore kept
        np.testing.assert_array_equal(masks[image_id], resize_masks([split.masks[i]], 224)[0])
    assert set(np.unique(masks['a/0.jpg'])) == {0, 1, metrics.IGNORE}


def test_listed_boxes_are_the_nearest_integers():
    """Their loader parses integers; float noise (a TFDS box times the image size) is undone."""
    got = wsolevaluation.listed_boxes(np.array([[[26.999998, 0.4, 319.5000001, 239.0], metrics.PAD_BOX]]))
    np.testing.assert_array_equal(got, [[[27, 0, 320, 239], metrics.PAD_BOX]])


def test_no_box_tree_when_an_image_has_no_box():
    split = _hand_split()
    split.boxes[1] = metrics.PAD_BOX
    assert set(wsolevaluation.metadata_lines(split, split.names)) == {'OpenImages'}


@pytest.mark.parametrize(
    'bad, message',
    [
        ('../up.jpg', 'goes up'),
        ('/abs.jpg', 'absolute'),
        ('a,b.jpg', 'comma'),
        ('', 'empty'),
        ('b.jpg', 'appears twice'),
    ],
)
def test_image_ids_that_would_leave_the_scoremap_folder_or_break_their_files(bad, message):
    split = _hand_split()
    split.names[0] = bad
    with pytest.raises(DataError, match=message):
        wsolevaluation.image_ids(split)


def test_evaluator_commands_name_the_written_folders():
    commands = wsolevaluation.evaluator_commands('W/scoremaps', 'W/meta', 'W/masks', ['CUB', 'OpenImages'])
    assert commands['maxboxacc_v1'].endswith('--dataset_name=CUB --multi_contour_eval=False --multi_iou_eval=False')
    assert '--multi_contour_eval=True --multi_iou_eval=True --iou_threshold_list 30 50 70' in commands['maxboxacc_v2']
    assert '--dataset_name=OpenImages --mask_root=W/masks/' in commands['pxap']
    assert all(
        c.startswith(
            'python evaluation.py --scoremap_root=W/scoremaps/ --metadata_root=W/meta/ --split=test '
            '--cam_curve_interval=0.01'
        )
        for c in commands.values()
    )


def _golden():
    with open(os.path.join(GOLDEN, 'wsolevaluation.json')) as fh:
        return json.load(fh)


@pytest.mark.parametrize('name', ['synthetic', 'openimages'])
def test_metrics_equal_wsolevaluation_on_the_golden_maps(name):
    """MaxBoxAcc, MaxBoxAccV2 and PxAP of wsol-jax (its ground truth from the original pixels,
    `wsolevaluation.resize_boxes` and `resize_masks`, and its metrics) on the maps their
    evaluator scored equal their numbers. Theirs are percentages computed as `count * 100. / n`
    and (V2) averaged in percent, PxAP summed over the non-empty points and times 100; ours are
    fractions of the same counts and the same sum: equal up to the last bits of a float, so the
    comparison is at 1e-9 percent, and the box counts are compared as integers."""
    record = _golden()['sets'][name]
    theirs = record['their_numbers']
    z = np.load(os.path.join(GOLDEN, f'{name}.npz'))
    maps = golden_maps(z['maps_uint8'])  # the float32 values their evaluator read
    n = len(maps)
    assert n == record['images'] >= 24 and maps.shape[1:] == (224, 224)
    acc = metrics.MaxBoxAccAccumulator(0.01, (30, 50, 70))
    acc.update(maps, wsolevaluation.resize_boxes(z['boxes'], z['sizes']))
    ours = {**acc.result(), 'pxap': metrics.pxap(maps, resize_masks(z['masks'], wsolevaluation.SIZE), 0.01)}
    for metric in ('maxboxacc_v1', 'maxboxacc_v2', 'pxap'):
        assert 100 * ours[metric] == pytest.approx(theirs[metric], abs=1e-9), metric
    assert round(theirs['maxboxacc_v1'] * n / 100) == round(ours['maxboxacc_v1'] * n)
    assert round(3 * theirs['maxboxacc_v2'] * n / 100) == round(3 * ours['maxboxacc_v2'] * n)
    # Not a degenerate case: the maps localise something and differ between the metrics.
    assert 0 < theirs['maxboxacc_v1'] < 100 and 0 < theirs['pxap'] < 100
    if name == 'openimages':
        assert theirs['pxap_from_the_dataset_files'] == theirs['pxap']
        assert (z['masks'] == metrics.IGNORE).any()


def test_golden_maps_are_opencvs_bilinear_upsampling_computed_exactly():
    """helpers.golden_maps (integer arithmetic, no OpenCV) is OpenCV's INTER_LINEAR x7 up to
    float rounding, and copies each source pixel to the centre of its 7 x 7 block."""
    k = np.random.default_rng(0).integers(0, 256, (2, 32, 32)).astype(np.uint8)
    k[:, 4, 9], k[:, 20, 3] = 0, 255
    maps = golden_maps(k)
    opencv = np.stack([cv2.resize(m.astype(np.float32) / 255, (224, 224), interpolation=cv2.INTER_LINEAR) for m in k])
    assert maps.dtype == np.float32 and np.abs(maps - opencv).max() < 1e-6
    np.testing.assert_array_equal(np.rint(maps[:, 3::7, 3::7] * 255), k)
    assert (maps.min(axis=(1, 2)) == 0).all() and (maps.max(axis=(1, 2)) == 1).all()
