"""Using a trained run: the Localizer, export/load, predict on new images, wsolevaluation scoremaps."""
import csv
import json
import os
import shutil

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import tiny_synthetic
from wsol_jax import evaluate as evaluate_lib, localization, metrics, parallel, run as run_lib
from wsol_jax import workdir as workdir_lib, wsolevaluation
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.data import load_dataset
from wsol_jax.localizer import Localizer, box_to_image, load_localizer, to_rgb
from wsol_jax.predict import predict
from wsol_jax.select import load_selection


@pytest.fixture(scope='module')
def localizer(method1_run):
    return Localizer.from_workdir(method1_run[0], batch_size=8)


@pytest.fixture(scope='module')
def test_split(method1_run):
    return load_dataset(tiny_synthetic('method1')).test


def test_localizer_boxes_equal_the_evaluation_boxes(method1_run, localizer, test_split):
    """Crop = image size here, so the whole image is the evaluation's view: the boxes must be
    the very boxes the evaluation computes from the selected epoch."""
    workdir, _ = method1_run
    cfg = tiny_synthetic('method1')
    ctx = Context(cfg, workdir, load_dataset(cfg), parallel.make_mesh())
    g_model, g_state, _ = g_setup(ctx, abstract=True)
    g_vars = restore_g(ctx, g_state, load_selection(workdir)['selected_epoch'])
    maps = np.asarray(g_model.apply(g_vars, evaluate_lib.inference.center_crop(jnp.asarray(test_split.images), 32)))
    expected = localization.boxes_from_maps(maps, cfg.eval.threshold_ratio, cfg.eval.box_rule)
    out = localizer(test_split.images)
    np.testing.assert_array_equal(out.boxes, expected)
    np.testing.assert_allclose(np.stack(out.maps), maps, atol=1e-5)
    assert out.classes.shape == (len(test_split),) and np.all((out.probabilities > 0) & (out.probabilities <= 1))


def test_export_loads_without_the_workdir_and_gives_the_same_outputs(method1_run, localizer, test_split, tmp_path):
    path = localizer.export(str(tmp_path / 'export'))
    moved = shutil.move(path, str(tmp_path / 'elsewhere'))
    spec = json.load(open(os.path.join(moved, 'localizer.json')))
    assert spec['box_rule'] == 'normalized' and spec['input_size'] == 32
    assert spec['class_names'] == ['genus0-disc', 'genus0-triangle', 'genus1-disc', 'genus1-triangle']
    loaded = load_localizer(moved)
    a, b = localizer(test_split.images[:5]), loaded(test_split.images[:5])
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(np.stack(a.maps), np.stack(b.maps), atol=1e-6)
    # only the networks' variables: nothing of an optimiser
    assert set(loaded.g_vars) == {'params', 'batch_stats'} and set(loaded.f_vars) == {'params', 'batch_stats'}


def test_boxes_map_back_to_the_images_own_pixels(localizer):
    """A hand-made 97x53 image with a bright rectangle at a known place, through the whole
    predict geometry (resize to the input, box rule, contour, back to the image), with g's map
    replaced by the image's brightness so that the expected box is known exactly."""
    image = np.zeros((53, 97, 3), np.uint8)
    image[10:30, 60:90] = 255     # x 60..89, y 10..29
    fake = Localizer.__new__(Localizer)
    fake.__dict__.update(localizer.__dict__)

    def brightness(g_vars, f_vars, x):
        maps = jnp.asarray(x, jnp.float32).mean(-1) / 255.0
        return maps, localization.thresholded_maps(maps, 0.5, 'normalized'), jnp.ones((len(x), 4)) / 4
    fake._fn = brightness
    out = fake([image])
    x0, y0, x1, y1 = out.boxes[0]
    assert abs(x0 - 60) <= 2 and abs(y0 - 10) <= 2 and abs(x1 - 90) <= 2 and abs(y1 - 30) <= 2
    assert out.maps[0].shape == (53, 97)
    np.testing.assert_array_equal(box_to_image(np.array([[0, 0, 32, 32]]), 32, [97], [53]), [[0, 0, 97, 53]])


def test_images_of_any_mode_become_rgb():
    grey = np.full((5, 7), 9, np.uint8)
    assert to_rgb(grey).shape == (5, 7, 3) and to_rgb(grey[..., None]).shape == (5, 7, 3)
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    np.testing.assert_array_equal(to_rgb(rgba)[..., 0], 200)
    with pytest.raises(ValueError, match='uint8'):
        to_rgb(np.zeros((5, 7, 3), np.float32))


def test_one_image_instead_of_a_batch_is_a_clear_error(localizer):
    with pytest.raises(ValueError, match=r'one image of shape \(20, 30, 3\).*localizer\(\[image\]\)'):
        localizer(np.zeros((20, 30, 3), np.uint8))


def test_predict_writes_maps_overlays_and_rows_and_skips_unreadable_files(localizer, test_split, tmp_path):
    folder = tmp_path / 'images'
    (folder / 'sub').mkdir(parents=True)
    sizes = [(45, 29), (80, 120), (33, 33)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(test_split.images[i]).resize((w, h), Image.BILINEAR).save(folder / f'img{i}.jpg', quality=95)
    Image.fromarray(test_split.images[3]).convert('L').save(folder / 'sub' / 'grey.png')
    Image.fromarray(test_split.images[4]).convert('RGBA').save(folder / 'sub' / 'alpha.png')
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    out = tmp_path / 'out'
    summary = predict(localizer, str(folder), str(out), save_npy=True, batch_size=2)
    assert summary['written'] == 5 and [os.path.basename(p) for p, _ in summary['unreadable']] == ['broken.jpg']
    rows = list(csv.DictReader(open(out / 'predictions.csv')))
    jsonl = [json.loads(line) for line in open(out / 'predictions.jsonl')]
    assert len(rows) == len(jsonl) == 5
    for row in jsonl:
        x0, y0, x1, y1 = row['box']
        assert 0 <= x0 <= x1 <= row['width'] and 0 <= y0 <= y1 <= row['height']
        assert row['class_name'] == localizer.class_name(row['class']) and 0 <= row['S'] <= 1
        name = os.path.splitext(os.path.relpath(row['path'], folder))[0].replace(os.sep, '__')
        saved = cv2.imread(str(out / 'maps' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        assert saved.shape == (row['height'], row['width'])
        assert np.load(out / 'maps' / f'{name}.npy').shape == (row['height'], row['width'])
        assert cv2.imread(str(out / 'overlays' / f'{name}.jpg')).shape[:2] == (row['height'], row['width'])
    assert 'broken.jpg' in (out / 'unreadable.txt').read_text()


def test_predict_on_a_glob_and_a_list_file(localizer, test_split, tmp_path):
    for i in range(3):
        Image.fromarray(test_split.images[i]).save(tmp_path / f'a{i}.png')
    (tmp_path / 'list.txt').write_text('a0.png\na2.png\n')
    assert predict(localizer, str(tmp_path / 'a*.png'), str(tmp_path / 'o1'))['written'] == 3
    assert predict(localizer, str(tmp_path / 'list.txt'), str(tmp_path / 'o2'))['written'] == 2


def test_saved_scoremaps_read_back_give_the_same_numbers(method1_run, tmp_path):
    """eval.save_maps on the synthetic set (no files of its own): the .npy files and the metadata
    and masks written beside them, read as clovaai/wsolevaluation's evaluation.py reads them
    (tests/helpers.py), give exactly the numbers of the in-memory pass through our metrics."""
    from helpers import read_wsolevaluation_ground_truth
    workdir = str(tmp_path / 'w')
    shutil.copytree(method1_run[0], workdir)
    cfg = tiny_synthetic('method1')
    cfg.eval.save_maps = True
    cfg.eval.num_workers = 2      # the worker-process path of MaxBoxAcc
    results = run_lib.run(cfg, workdir, stage='evaluate')
    in_memory = results['weight_map_selected_wsolevaluation']
    split = load_dataset(cfg).test
    ids, boxes, masks = read_wsolevaluation_ground_truth(os.path.join(workdir, workdir_lib.WSOLEVAL_METADATA),
                                                         os.path.join(workdir, workdir_lib.WSOLEVAL_MASKS))
    assert ids == split.names == [f'test_{i:05d}' for i in range(len(split))]   # the generated ids
    for i, image_id in enumerate(ids):   # 32 px boxes and masks at 224: x 7
        np.testing.assert_array_equal(boxes[image_id], split.boxes[i] * 7)
        np.testing.assert_array_equal(masks[image_id], np.kron(split.masks[i], np.ones((7, 7), np.uint8)))
    maps = np.stack([np.load(wsolevaluation.scoremap_path(os.path.join(workdir, workdir_lib.SCOREMAPS), i))
                     for i in ids])
    assert maps.shape == (len(split), 224, 224) and maps.dtype == np.float32
    assert (maps.min(axis=(1, 2)) == 0).all() and (maps.max(axis=(1, 2)) == 1).all()
    acc = metrics.MaxBoxAccAccumulator(cfg.eval.pxap_interval, tuple(cfg.eval.maxboxacc_ious))
    acc.update(maps, [boxes[i] for i in ids])
    read_back = {**acc.result(), 'pxap': metrics.pxap(maps, np.stack([masks[i] for i in ids]), cfg.eval.pxap_interval)}
    assert read_back == in_memory
    md = open(os.path.join(workdir, 'results.md')).read()
    assert 'How each number was obtained' in md and 'wsolevaluation protocol' in md


def test_cli_export_then_predict_from_the_export(method1_run, test_split, tmp_path):
    import subprocess
    import sys
    from helpers import ROOT
    workdir = str(tmp_path / 'w')
    shutil.copytree(method1_run[0], workdir)
    images = tmp_path / 'photos'
    images.mkdir()
    for i in range(3):
        Image.fromarray(test_split.images[i]).resize((50 + 10 * i, 40), Image.BILINEAR).save(images / f'{i}.jpg')

    def cli(*args):
        return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), '--config=configs/synthetic.py:method1',
                               f'--workdir={workdir}', *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    proc = cli('--stage=export')
    assert proc.returncode == 0, proc.stderr[-2000:]
    export = os.path.join(workdir, 'export')
    assert os.path.isfile(os.path.join(export, 'localizer.json'))
    proc = cli('--stage=predict', f'--config.predict.images={images}', f'--config.predict.model={export}',
               f'--config.predict.out={tmp_path / "out"}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(csv.DictReader(open(tmp_path / 'out' / 'predictions.csv')))) == 3
    proc = cli('--stage=predict', f'--config.predict.images={tmp_path / "nothing_here"}')
    assert proc.returncode == 2 and proc.stderr.startswith('error: predict.images=')
