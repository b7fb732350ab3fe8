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
from wsol_jax import boxes as boxes_lib, inference, metrics, parallel, run as run_lib
from wsol_jax import workdir as workdir_lib, wsolevaluation
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.data import load_dataset
from wsol_jax.localizer import Localizer, box_to_image, load_localizer, to_rgb
from wsol_jax.predict import predict
from wsol_jax.stages.export import export_localizer
from wsol_jax.stages.select import load_selection


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
    g_vars = restore_g(ctx, g_state, load_selection(workdir)['selected_step'])
    maps = np.asarray(g_model.apply(g_vars, inference.center_crop(jnp.asarray(test_split.images), 32)))
    expected = boxes_lib.boxes_from_maps(maps, cfg.eval.threshold_ratio, cfg.eval.box_rule)
    out = localizer(test_split.images)
    np.testing.assert_array_equal(out.boxes, expected)
    np.testing.assert_allclose(np.stack(out.maps), maps, atol=1e-5)
    assert out.classes.shape == (len(test_split),) and np.all((out.probabilities > 0) & (out.probabilities <= 1))


def test_export_loads_without_the_workdir_and_gives_the_same_outputs(method1_run, localizer, test_split, tmp_path):
    path = export_localizer(localizer, str(tmp_path / 'export'))
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
    image[10:30, 60:90] = 255  # x 60..89, y 10..29
    fake = Localizer.__new__(Localizer)
    fake.__dict__.update(localizer.__dict__)

    def brightness(g_vars, f_vars, x):
        maps = jnp.asarray(x, jnp.float32).mean(-1) / 255.0
        return maps, boxes_lib.thresholded_maps(maps, 0.5, 'normalized'), jnp.ones((len(x), 4)) / 4

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
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 128
    rgb = to_rgb(rgba)  # over white, as a file with alpha is read: 200 * 128/255 + 255 * 127/255 = 227.4
    np.testing.assert_array_equal(rgb[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [227, 127, 127])
    np.testing.assert_array_equal(rgb[1:], 255)
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
    (reason,) = [r for _, r in summary['unreadable']]
    assert 'on_bad_sample' not in reason and 'remove it: predict skipped it' in reason
    rows = list(csv.DictReader(open(out / 'predictions.csv')))
    jsonl = [json.loads(line) for line in open(out / 'predictions.jsonl')]
    assert len(rows) == len(jsonl) == 5
    for row in jsonl:
        x0, y0, x1, y1 = row['box']
        assert 0 <= x0 <= x1 <= row['width'] and 0 <= y0 <= y1 <= row['height']
        assert row['class_name'] == localizer.class_name(row['class']) and 0 <= row['S'] <= 1
        rel = os.path.relpath(row['path'], folder)  # the input's path, extension kept
        assert row['map'] == f'maps/{rel}.png' and row['overlay'] == f'overlays/{rel}.jpg'
        saved = cv2.imread(str(out / row['map']), cv2.IMREAD_UNCHANGED)
        assert saved.shape == (row['height'], row['width'])
        assert np.load(out / f'maps/{rel}.npy').shape == (row['height'], row['width'])
        assert cv2.imread(str(out / row['overlay'])).shape[:2] == (row['height'], row['width'])
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
    cfg.eval.num_workers = 2  # the worker-process path of MaxBoxAcc
    results = run_lib.run(cfg, workdir, stage='evaluate')
    in_memory = results['weight_map_selected_wsolevaluation']
    split = load_dataset(cfg).test
    ids, boxes, masks = read_wsolevaluation_ground_truth(
        os.path.join(workdir, workdir_lib.WSOLEVAL_METADATA), os.path.join(workdir, workdir_lib.WSOLEVAL_MASKS)
    )
    assert ids == split.names == [f'test_{i:05d}' for i in range(len(split))]  # the generated ids
    for i, image_id in enumerate(ids):  # 32 px boxes and masks at 224: x 7
        np.testing.assert_array_equal(boxes[image_id], split.boxes[i] * 7)
        np.testing.assert_array_equal(masks[image_id], np.kron(split.masks[i], np.ones((7, 7), np.uint8)))
    maps = np.stack(
        [np.load(wsolevaluation.scoremap_path(os.path.join(workdir, workdir_lib.SCOREMAPS), i)) for i in ids]
    )
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
        return subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, 'main.py'),
                '--config=configs/synthetic.py:method1',
                f'--workdir={workdir}',
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )

    proc = cli('--stage=export')
    assert proc.returncode == 0, proc.stderr[-2000:]
    export = os.path.join(workdir, 'export')
    assert os.path.isfile(os.path.join(export, 'localizer.json'))
    proc = cli(
        '--stage=predict',
        f'--config.predict.images={images}',
        f'--config.predict.model={export}',
        f'--config.predict.out={tmp_path / "out"}',
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(csv.DictReader(open(tmp_path / 'out' / 'predictions.csv')))) == 3
    proc = cli('--stage=predict', f'--config.predict.images={tmp_path / "nothing_here"}')
    assert proc.returncode == 2 and proc.stderr.startswith('error: predict.images=')


# --- photos as users have them: EXIF orientation, 16-bit files, names, links, failed writes ---


def _rows(out):
    return list(csv.DictReader(open(out / 'predictions.csv')))


def _map_u8(weight_map):
    return (np.clip(weight_map, 0, 1) * 255).round().astype(np.uint8)


def test_exif_rotated_photos_give_the_upright_box_map_and_overlay(localizer, test_split, tmp_path):
    """A phone photo stored turned (EXIF orientation 6, 3, 8) is predicted as a viewer shows it:
    on exactly the pixels its stored decode gives once turned upright by numpy (an independent
    transposition), in the upright frame, and like the upright copy up to JPEG's re-encoding."""
    folder = tmp_path / 'photos'
    folder.mkdir()
    upright = Image.fromarray(test_split.images[5]).resize((48, 32), Image.BILINEAR)  # 48 wide, 32 high
    upright.save(folder / 'upright.jpg', quality=100, subsampling=0)
    # stored pixels -> what a viewer shows: orientation 6 turns them 90 degrees clockwise, 8 counter-clockwise
    turns = {6: (Image.ROTATE_90, -1), 3: (Image.ROTATE_180, 2), 8: (Image.ROTATE_270, 1)}
    for orientation, (store, _) in turns.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        upright.transpose(store).save(folder / f'o{orientation}.jpg', quality=100, subsampling=0, exif=exif)
    out = tmp_path / 'out'
    predict(localizer, str(folder), str(out))
    rows = {os.path.basename(r['path']): r for r in _rows(out)}
    reference = [int(rows['upright.jpg'][k]) for k in ('x0', 'y0', 'x1', 'y1')]
    for orientation, (_, k) in turns.items():
        row = rows[f'o{orientation}.jpg']
        stored = np.asarray(Image.open(folder / f'o{orientation}.jpg').convert('RGB'))
        assert stored.shape[:2] == ((48, 32) if orientation != 3 else (32, 48))
        shown = np.ascontiguousarray(np.rot90(stored, k))
        expected = localizer([shown])
        box = [int(row[c]) for c in ('x0', 'y0', 'x1', 'y1')]
        assert (int(row['width']), int(row['height'])) == (48, 32)
        assert box == expected.boxes[0].tolist()
        np.testing.assert_array_equal(
            cv2.imread(str(out / row['map']), cv2.IMREAD_UNCHANGED), _map_u8(expected.maps[0])
        )
        assert cv2.imread(str(out / row['overlay'])).shape[:2] == (32, 48)
        assert np.abs(np.subtract(box, reference)).max() <= 2, (orientation, box, reference)


def test_16_bit_png_gives_the_8_bit_result_held_or_decoded_again(localizer, test_split, tmp_path):
    """A 16-bit grey PNG (257 x the 8-bit values) predicts exactly as its 8-bit copy (Pillow's
    convert would clip it to a white image); and an image decoded again for its overlay
    (`held_pixels=0`: what large photos get) gives the very same files as one kept in memory."""
    folder = tmp_path / 'grey'
    folder.mkdir()
    grey = np.asarray(Image.fromarray(test_split.images[6]).convert('L').resize((40, 36), Image.BILINEAR))
    Image.fromarray(grey).save(folder / 'grey8.png')
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / 'grey16.png')
    assert Image.open(folder / 'grey16.png').mode == 'I;16'
    held, again = tmp_path / 'held', tmp_path / 'again'
    predict(localizer, str(folder), str(held), batch_size=2)
    predict(localizer, str(folder), str(again), batch_size=2, held_pixels=0)
    a, b = _rows(held)
    fields = ('x0', 'y0', 'x1', 'y1', 'class', 'probability', 'S', 'width', 'height')
    assert [a[f] for f in fields] == [b[f] for f in fields]
    maps = [cv2.imread(str(held / r['map']), cv2.IMREAD_UNCHANGED) for r in (a, b)]
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], _map_u8(localizer([grey]).maps[0]))
    white = localizer([np.full_like(grey, 255)])
    assert not np.array_equal(maps[0], _map_u8(white.maps[0]))  # what the clipped read would give
    assert _rows(again) == _rows(held)
    for r in _rows(held):
        for key in ('map', 'overlay'):
            assert (held / r[key]).read_bytes() == (again / r[key]).read_bytes()


def test_names_keep_extension_and_path_links_are_followed_once_and_the_count_is_what_was_written(
    localizer, test_split, tmp_path, capsys
):
    folder = tmp_path / 'in'
    (folder / 'sub' / 'dir').mkdir(parents=True)
    image = Image.fromarray(test_split.images[7])
    long_name = 'x' * 250 + '.png'  # 254 bytes: a legal name, but + '.png' is not
    files = ['same.jpg', 'same.png', 'img.webp', 'img.tiff', 'SAME.jpg', 'sub/dir/img.jpg', long_name]
    for name in files:
        image.save(folder / name)
    os.symlink('.', folder / 'loop')  # a folder loop: in/loop/loop/... is in/
    os.symlink('same.jpg', folder / 'alias.jpg')  # one file, two names
    for spec in (str(folder), str(folder / '**' / '*')):
        out = tmp_path / ('out_folder' if spec == str(folder) else 'out_glob')
        summary = predict(localizer, spec, str(out), batch_size=3)
        printed = capsys.readouterr().out
        rows = _rows(out)
        maps = [p for p in (out / 'maps').rglob('*.png')]
        overlays = [p for p in (out / 'overlays').rglob('*.jpg')]
        assert summary['written'] == len(rows) == len(maps) == len(overlays) == len(files)
        assert f'[predict] {len(files)} image(s) written' in printed
        assert summary['repeated'] >= 1 and 'predicted once' in printed  # alias.jpg
        assert sorted(os.path.realpath(r['path']) for r in rows) == sorted(str(folder / f) for f in files)
        by_name = {os.path.relpath(r['path'], folder): r for r in rows}
        for name in ('SAME.jpg', 'same.png', 'img.webp', 'img.tiff', 'sub/dir/img.jpg'):
            assert by_name[name]['map'] == f'maps/{name}.png' and by_name[name]['overlay'] == f'overlays/{name}.jpg'
        # same.jpg would merge with SAME.jpg (sorted first) on a case-insensitive disk: it gets a name of its own
        assert by_name['same.jpg']['map'].endswith('~same.jpg.png')
        long_map = by_name[long_name]['map']
        assert len(os.path.basename(long_map).encode()) <= 255 and long_map.endswith('.png.png')
        assert len({r['map'].lower() for r in rows}) == len(rows)
        for r in rows:
            assert cv2.imread(str(out / r['overlay'])).shape[:2] == (int(r['height']), int(r['width']))


def test_tiny_images_warn_and_failed_writes_are_listed_not_counted(
    localizer, test_split, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / 'in'
    folder.mkdir()
    for name in ('a.png', 'b.png', 'c.png'):
        Image.fromarray(test_split.images[8]).save(folder / name)
    Image.fromarray(test_split.images[8]).resize((3, 3), Image.BILINEAR).save(folder / 'tiny.png')
    out = tmp_path / 'out'
    (out / 'maps' / 'a.png.png').mkdir(parents=True)  # the map of a.png cannot be written (even by root)
    encode, overlays_encoded = cv2.imencode, []

    def first_overlay_fails(ext, image, *args):
        if ext == '.jpg':
            overlays_encoded.append(image.shape)
            if len(overlays_encoded) == 1:  # b.png's (a.png failed at its map, before its overlay)
                return False, None
        return encode(ext, image, *args)

    monkeypatch.setattr(cv2, 'imencode', first_overlay_fails)
    summary = predict(localizer, str(folder), str(out), batch_size=4)
    printed = capsys.readouterr().out
    failed = {os.path.basename(p): reason for p, reason in summary['failed']}
    assert set(failed) == {'a.png', 'b.png'}
    assert 'cannot write' in failed['a.png'] and 'could not encode' in failed['b.png']
    rows = _rows(out)
    assert summary['written'] == len(rows) == 2 and '[predict] 2 image(s) written' in printed
    assert sorted(os.path.basename(r['path']) for r in rows) == ['c.png', 'tiny.png']
    assert not (out / 'maps' / 'b.png.png').exists()  # b's map was written, then removed with it
    assert sorted(p.name for p in (out / 'overlays').iterdir()) == ['c.png.jpg', 'tiny.png.jpg']
    assert 'a.png' in (out / 'write_failures.txt').read_text() and '2 image(s) not written' in printed
    (tiny,) = [r for r in rows if r['path'].endswith('tiny.png')]
    assert (int(tiny['width']), int(tiny['height'])) == (3, 3)
    assert "3x3 px, under the networks' stride of 32 px" in tiny['warning']
    assert f'[predict] warning: {tiny["path"]}: ' in printed
    (normal,) = [r for r in rows if r['path'].endswith('c.png')]
    assert 'stride' not in normal['warning']
