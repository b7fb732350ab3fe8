"""Predict on new images (wsol_jax/predict.py and its stage): maps, overlays and rows; globs and lists;
export then predict from the CLI; photos as users have them. (`localizer`, `test_split`: tests/conftest.py.)"""

import csv
import json
import os
import shutil

import cv2
import numpy as np
from PIL import Image

from wsol_jax.predict import HELD_PIXELS, PixelBudget, predict


def test_a_batch_holds_at_most_the_pixel_budget_of_decoded_photos_whatever_their_size():
    """`PixelBudget` on sizes alone (nothing allocated). Eight 12 Mpx photos (4000 x 3000) under the
    default 2**26 = 67,108,864 px: five stay decoded (60,000,000 px), a sixth would make 72,000,000;
    the rest are decoded again for their overlays. One 100 Mpx panorama alone exceeds it."""
    assert HELD_PIXELS == 2**26
    budget = PixelBudget()
    assert [budget.keep(4000 * 3000) for _ in range(8)] == [True] * 5 + [False] * 3
    assert budget.held == 60_000_000 and budget.keep(7_108_864) and budget.held == HELD_PIXELS  # exactly full
    assert not budget.keep(1)
    assert not PixelBudget().keep(20_000 * 5_000)
    rng = np.random.default_rng(0)
    for _ in range(200):  # any photos: the kept pixels never exceed the budget, each released one would not fit
        sizes = rng.integers(1, 12_000, (int(rng.integers(1, 40)), 2))
        budget, held = PixelBudget(), 0
        for w, h in sizes:
            if budget.keep(int(w * h)):
                held += int(w * h)
            else:
                assert held + w * h > HELD_PIXELS
        assert held == budget.held <= HELD_PIXELS


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
