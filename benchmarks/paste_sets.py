"""Shared code of the pasted benchmark sets: real objects pasted at random places on crops of
real photographs, written in clovaai/wsolevaluation's metadata layout.

    make_photo_set.py   one photograph per class (hand-drawn masks)
    make_digit_set.py   handwritten digits (scikit-learn's load_digits), split by writer's form
    make_glyph_set.py   letters in the typefaces matplotlib ships, split by typeface

Nothing is downloaded: the backgrounds are sample photographs that installed packages ship
(scikit-image's `skimage.data`, scikit-learn's `load_sample_image`, matplotlib's sample data).

Here: the photographs (`load_photos`), a background crop (`background`), an object resized,
rotated and feathered (`warp_object`), pasted (`paste`), a stroke object coloured against its
background (`stroke_colour`, `paint`), balanced labels, the contact sheet and the writer of the
layout (`write_set`). What one image shows is the caller's `render(split, label, k, rng)`.

Layout (paths relative to the set's folder):
    images/<split>/NNNNN.jpg                   JPEG quality 90
    masks/<split>/NNNNN.png                    val and test: 255 = object
    <metadata folder>/<split>/image_ids.txt    images/train/00000.jpg
                              class_labels.txt images/train/00000.jpg,3
                              image_sizes.txt  images/train/00000.jpg,96,96
                              localization.txt val and test; its lines are the caller's `layouts`
The sets with many instances per class (`STROKE_LAYOUTS`) write two metadata folders, because
clovaai's loader reads one localization.txt as all boxes (`get_bounding_boxes`, 5 fields) or all
masks (`get_mask_paths`, exactly 3 fields, and `evaluation.get_mask` opens the ignore file of
every image's first line):
    metadata/<split>/localization.txt          images/val/00000.jpg,masks/val/00000.png,masks/no_ignore.png
                                               (OpenImages' form; masks/no_ignore.png is all 0: nothing ignored)
    metadata_boxes/<split>/localization.txt    images/val/00000.jpg,12,30,60,71   (CUB's form)
wsol_jax's `wsolevaluation` reader reads both: `metadata/` gives each image its mask and, as the
box, the mask's bounding rectangle (which is the GT box, see `paste`); `metadata_boxes/` the boxes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

SPLITS = ('train', 'val', 'test')

# Photographs that backgrounds are cropped from.
BACKGROUNDS = (
    'astronaut',
    'chelsea',
    'coffee',
    'rocket',
    'camera',
    'coins',
    'brick',
    'grass',
    'gravel',
    'moon',
    'hubble_deep_field',
    'immunohistochemistry',
    'motorcycle',
    'china',
    'flower',
    'grace_hopper',
)

NO_IGNORE = 'masks/no_ignore.png'

BACKGROUND_CREDITS = """\
Backgrounds: square crops of photographs that installed packages ship; nothing was downloaded.
Licences as the packages state them (check them before redistributing this set; it is meant for
local benchmarks):
  scikit-image {skimage}, skimage.data (each function's docstring): astronaut (NASA, public domain),
    chelsea, coffee, camera (CC0), rocket (SpaceX, public domain), coins (Brooklyn Museum, no known
    copyright restrictions), brick, grass, gravel (CC0 textures), hubble_deep_field (NASA, public
    domain), immunohistochemistry (CMMI, no known copyright restrictions), moon (no licence
    stated), stereo_motorcycle left view (Middlebury 2014 stereo benchmark; no licence stated)
  scikit-learn {sklearn}, sklearn/datasets/images/README.txt: china.jpg, flower.jpg (CC BY 2.0)
  matplotlib {mpl}, mpl-data/sample_data/grace_hopper.jpg (US Navy portrait)
"""


def need_skimage() -> None:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise SystemExit(
            'the pasted sets need scikit-image for their background photographs: pip install scikit-image'
        ) from None


def load_photos() -> dict[str, np.ndarray]:
    """The photographs as RGB uint8 arrays (grey ones repeated over 3 channels)."""
    need_skimage()
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos = {
        n: getattr(skimage.data, n)()
        for n in (
            'astronaut',
            'chelsea',
            'coffee',
            'rocket',
            'camera',
            'coins',
            'brick',
            'grass',
            'gravel',
            'moon',
            'hubble_deep_field',
            'immunohistochemistry',
        )
    }
    photos['motorcycle'] = skimage.data.stereo_motorcycle()[0]
    photos['china'] = load_sample_image('china.jpg')
    photos['flower'] = load_sample_image('flower.jpg')
    path = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    photos['grace_hopper'] = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = {}
    for name, im in photos.items():
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        out[name] = np.ascontiguousarray(im[..., :3].astype(np.uint8))
    return out


def background_credits() -> str:
    import matplotlib
    import skimage
    import sklearn

    return BACKGROUND_CREDITS.format(
        skimage=skimage.__version__, sklearn=sklearn.__version__, mpl=matplotlib.__version__
    )


def jitter(im: np.ndarray, rng, gain: float, brightness: float, contrast: float) -> np.ndarray:
    """Per-channel gains, brightness and contrast on a float RGB image in [0, 255]."""
    im = im * rng.uniform(1 - gain, 1 + gain, 3)
    im = im * rng.uniform(1 - brightness, 1 + brightness)
    mean = im.mean()
    return (im - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean


def background(photos, taken, names, size, rng) -> np.ndarray:
    """A random square crop (35-100 % of the shorter side) of one of `names`, resized to
    `size`, flipped at random, tinted: float32 `(size, size, 3)`. `taken[name]`: `(integral
    image, area)` of regions the crop may show at most 20 % of (objects of the classes)."""
    while True:
        name = names[rng.integers(len(names))]
        im = photos[name]
        h, w = im.shape[:2]
        for _ in range(20):
            side = int(round(rng.uniform(0.35, 1.0) * min(h, w)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            if name not in taken:
                break
            if all(
                t[y + side, x + side] - t[y, x + side] - t[y + side, x] + t[y, x] <= 0.2 * area
                for t, area in taken[name]
            ):
                break
        else:
            continue
        crop = cv2.resize(im[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return jitter(crop.astype(np.float32), rng, 0.12, 0.25, 0.2)


def warp_object(rgb: np.ndarray, alpha: np.ndarray, nw: int, nh: int, flip: bool, angle: float, size: int):
    """An object `(h, w, 3)` with its alpha `(h, w)` in [0, 1] resized to `nw x nh`, flipped
    left-right if `flip`, rotated by `angle` degrees and given a 1 px feathered edge:
    `(rgb float32, alpha float32)` cropped to the alpha's support, both smaller than `size - 1`."""
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_AREA)
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    pad = 2
    rot = cv2.getRotationMatrix2D((nw / 2, nh / 2), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    bw, bh = int(np.ceil(nw * cos + nh * sin)) + 2 * pad, int(np.ceil(nw * sin + nh * cos)) + 2 * pad
    rot[0, 2] += bw / 2 - nw / 2
    rot[1, 2] += bh / 2 - nh / 2
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb), rot, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), rot, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.6)  # feathered edge
    ys, xs = np.nonzero(alpha > 1e-3)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    if max(rgb.shape[:2]) > size - 2:  # never at the default scales; keep it inside
        f = (size - 2) / max(rgb.shape[:2])
        nsz = (max(1, int(rgb.shape[1] * f)), max(1, int(rgb.shape[0] * f)))
        rgb = cv2.resize(rgb, nsz, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, nsz, interpolation=cv2.INTER_AREA)
    return rgb, alpha


def place(image: np.ndarray, alpha: np.ndarray, rng) -> tuple[int, int]:
    """A random top-left corner `(y, x)` that puts `alpha` `(h, w)` fully inside `image`."""
    h, w = alpha.shape
    size_y, size_x = image.shape[:2]
    return int(rng.integers(0, size_y - h + 1)), int(rng.integers(0, size_x - w + 1))


def paste(image: np.ndarray, obj: np.ndarray, alpha: np.ndarray, y: int, x: int):
    """Alpha-blend `obj` `(h, w, 3)` into float `image` `(S, S, 3)` (in place) at `(y, x)`:
    returns the GT mask, uint8 `(S, S)` 0/1 = pasted alpha >= 0.5. The GT box of every set is
    that mask's bounding rectangle (`mask_box`)."""
    h, w = alpha.shape
    a = alpha[..., None]
    image[y : y + h, x : x + w] = a * obj + (1 - a) * image[y : y + h, x : x + w]
    full = np.zeros(image.shape[:2], np.uint8)
    full[y : y + h, x : x + w] = alpha >= 0.5
    return full


def mask_box(mask: np.ndarray) -> list[int]:
    """`[x0, y0, x1, y1]` (x1, y1 exclusive) of a 0/1 mask, as cv2.boundingRect."""
    bx, by, bw, bh = cv2.boundingRect(mask)
    return [bx, by, bx + bw, by + bh]


def finish(image: np.ndarray, rng) -> np.ndarray:
    """About 1 in 10 images made grey; float -> uint8 `(S, S, 3)`."""
    size_y, size_x = image.shape[:2]
    if rng.random() < 0.1:
        image = np.repeat(image @ np.float32([0.299, 0.587, 0.114]), 3).reshape(size_y, size_x, 3)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _luma(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ np.float32([0.299, 0.587, 0.114])


def stroke_colour(under: np.ndarray, rng, min_contrast: float = 70.0) -> np.ndarray:
    """A random RGB colour (float32 `(3,)`) whose luma differs from the mean luma of the
    background pixels `under` `(K, 3)` by at least `min_contrast` (of 255), so that a stroke
    object (a glyph, a digit: its only cue is its shape) stays visible; hue and saturation are
    random."""
    bg = float(_luma(under).mean()) if len(under) else 128.0
    low, high = bg - min_contrast, bg + min_contrast
    choices = [(0.0, low)] if low > 0 else []
    if high < 255:
        choices.append((high, 255.0))
    if not choices:  # unreachable for min_contrast < 127.5
        choices = [(0.0, 0.0)]
    lengths = np.array([b - a for a, b in choices]) + 1e-6
    a, b = choices[rng.choice(len(choices), p=lengths / lengths.sum())]
    target = rng.uniform(a, b)
    hue = rng.uniform(0, 255, 3)
    colour = target + (hue - _luma(hue)) * rng.uniform(0.0, 1.0)  # saturation: 0 grey .. 1 the random hue
    for _ in range(4):  # clipping moves the luma: pull it back
        colour = np.clip(colour + (target - _luma(colour)), 0, 255)
    return colour.astype(np.float32)


def paint(alpha: np.ndarray, colour: np.ndarray, rng, shade: float = 0.2) -> np.ndarray:
    """A stroke object's RGB `(h, w, 3)`: `colour` under a linear shading ramp of up to
    +-`shade` across the object in a random direction (uneven light, not a flat sticker)."""
    h, w = alpha.shape
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(theta) * (xx - w / 2) + np.sin(theta) * (yy - h / 2)) / max(h, w)
    factor = 1 + rng.uniform(-shade, shade) * 2 * ramp
    return np.clip(colour[None, None, :] * factor[..., None], 0, 255)


def _long_side(alpha: np.ndarray) -> int:
    """Longer side of the box of `alpha >= 0.5` (0 if empty)."""
    ys, xs = np.nonzero(alpha >= 0.5)
    return int(max(ys.max() - ys.min(), xs.max() - xs.min())) + 1 if len(ys) else 0


def fit_stroke_object(
    alpha: np.ndarray, long_side: float, aspect: float, angle: float, size: int, tries: int = 6
) -> np.ndarray:
    """A stroke object's alpha `(h, w)` (float32 in [0, 1], any resolution) resized by `aspect`
    (width / height), rotated by `angle` degrees (`warp_object`, no flip), so that the longer
    side of its mask's box (alpha >= 0.5) is `long_side` pixels (to within a pixel, or the
    closest of `tries` scales: a glyph's hairlines fade below 0.5 at a few pixels, so the box
    does not grow in proportion to the scale there). Secant steps on the scale, bisection when
    one leaves the bracket that the earlier tries established."""
    h, w = alpha.shape
    rad = np.deg2rad(angle)
    sx, sy = np.sqrt(aspect), 1 / np.sqrt(aspect)
    frame = max(
        w * sx * abs(np.cos(rad)) + h * sy * abs(np.sin(rad)), w * sx * abs(np.sin(rad)) + h * sy * abs(np.cos(rad))
    )
    scale, low, high = long_side / frame, 0.0, np.inf  # the rotated frame's long side: an upper bound
    best = None
    for _ in range(tries):
        nw, nh = max(1, int(round(w * sx * scale))), max(1, int(round(h * sy * scale)))
        _, out = warp_object(alpha[..., None].repeat(3, -1), alpha, nw, nh, False, angle, size)
        got = _long_side(out)
        if best is None or abs(got - long_side) < best[0]:
            best = (abs(got - long_side), out)
        if abs(got - long_side) <= 1:
            break
        if got < long_side:
            low = scale
        else:
            high = scale
        step = scale * long_side / got if got else 2 * scale
        scale = step if low < step < high else (low + high) / 2 if np.isfinite(high) else 2 * scale
    return best[1]


def balanced_labels(n: int, num_classes: int, seed: int, split_id: int, stream: tuple = ()) -> np.ndarray:
    """Balanced labels (counts differ by at most one), shuffled."""
    return np.random.default_rng([seed, split_id, 1 << 20, *stream]).permutation(np.arange(n) % num_classes)


def contact_sheet(path: str, tiles: list, classes: list, size: int, rows: int = 4, cols: int = 8) -> None:
    """`rows x cols` sheet of `(rgb, box, label)` with the boxes drawn and class names written."""
    cell = max(size, 96) * 2
    sheet = np.full((rows * (cell + 4), cols * (cell + 4), 3), 255, np.uint8)
    for i, (rgb, box, label) in enumerate(tiles[: rows * cols]):
        f = cell / size
        tile = cv2.resize(rgb, (cell, cell), interpolation=cv2.INTER_NEAREST)
        x0, y0, x1, y1 = (int(round(v * f)) for v in box)
        cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
        cv2.putText(tile, classes[label], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(tile, classes[label], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
        r, c = divmod(i, cols)
        sheet[r * (cell + 4) + 2 : r * (cell + 4) + 2 + cell, c * (cell + 4) + 2 : c * (cell + 4) + 2 + cell] = tile
    cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# localization.txt lines of one val/test image: (image path, mask path, box [x0, y0, x1, y1]) -> lines
LineFn = Callable[[str, str, list], list]


def box_lines(rel: str, mask_rel: str, box: list) -> list:
    """clovaai's box form (CUB, ILSVRC): `path,x0,y0,x1,y1`, integers, x1 and y1 exclusive."""
    return [f'{rel},{box[0]},{box[1]},{box[2]},{box[3]}']


def ignore_mask_lines(rel: str, mask_rel: str, box: list) -> list:
    """clovaai's mask form (OpenImages): `path,mask_path,ignore_path`, the ignore file
    `NO_IGNORE` (all 0), which their `get_mask` opens for every image."""
    return [f'{rel},{mask_rel},{NO_IGNORE}']


STROKE_LAYOUTS: dict[str, LineFn] = {'metadata': ignore_mask_lines, 'metadata_boxes': box_lines}

# render(split, label, k: the image's index among its split's images of that label, rng)
#     -> (rgb uint8 (S, S, 3), mask uint8 (S, S) 0/1, box [x0, y0, x1, y1], instance name or None)
RenderFn = Callable[[str, int, np.random.Generator], tuple]


def _write_lines(path: str, lines: list) -> None:
    with open(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')


def check_counts(size: int, counts: dict) -> None:
    if size < 32:
        raise ValueError('--size must be at least 32')
    if counts['train'] <= 0 or counts['test'] <= 0 or counts['val'] < 0:
        raise ValueError('--num_train and --num_test must be positive, --num_val not negative')


def write_set(
    out: str,
    render: RenderFn,
    classes: list,
    counts: dict,
    seed: int,
    size: int,
    readme: str,
    layouts: dict[str, LineFn],
    sheet: tuple = ('preview.png', 4, 8),
    overwrite: bool = False,
    progress: bool = True,
    desc: str = 'set',
    stream: tuple = (),
) -> str:
    """Writes a set to `out` (built in `out.tmp`, then renamed) and returns `out`.

    `counts`: images per split (val may be 0: then no val/ folders). Image `i` of split `s` is
    `render(s, label, k, np.random.default_rng([seed, SPLITS.index(s), i, *stream]))` with
    balanced labels (`k`: how many images of `label` came before it in the split), so a split's
    images depend only on its own count and the seed (a larger train split leaves val and test
    as they were). `stream`: a set's own random streams (sets built with one seed would
    otherwise share image i's background crop, size, angle and place). `layouts`: metadata
    folder -> its localization.txt lines of a val/test image. `sheet`: (file name, rows, cols) of
    the contact sheet of test images. If `render` names instances, `instances.txt` lists
    `image path,instance` for every image."""
    check_counts(size, counts)
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f'{out} exists; pass --overwrite to replace it')
    tmp = out + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    tiles, instances = [], []
    bar = tqdm(total=sum(counts.values()), desc=desc, disable=not progress)
    for split_id, split in enumerate(SPLITS):
        n = counts[split]
        if n == 0:  # only val may be empty: no val/ folder
            continue
        for folder in layouts:
            os.makedirs(os.path.join(tmp, folder, split))
        os.makedirs(os.path.join(tmp, 'images', split))
        if split != 'train':
            os.makedirs(os.path.join(tmp, 'masks', split))
        ids, labels_txt, sizes_txt = [], [], []
        loc = {folder: [] for folder in layouts}
        seen = [0] * len(classes)
        for i, label in enumerate(balanced_labels(n, len(classes), seed, split_id, stream)):
            label = int(label)
            rng = np.random.default_rng([seed, split_id, i, *stream])
            rgb, mask, box, instance = render(split, label, seen[label], rng)
            seen[label] += 1
            rel = f'images/{split}/{i:05d}.jpg'
            cv2.imwrite(os.path.join(tmp, rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            ids.append(rel)
            labels_txt.append(f'{rel},{label}')
            sizes_txt.append(f'{rel},{size},{size}')
            if instance is not None:
                instances.append(f'{rel},{instance}')
            if split != 'train':
                mrel = f'masks/{split}/{i:05d}.png'
                cv2.imwrite(os.path.join(tmp, mrel), mask * 255)
                for folder, lines in layouts.items():
                    loc[folder] += lines(rel, mrel, box)
                if split == 'test' and len(tiles) < sheet[1] * sheet[2]:
                    tiles.append((rgb, box, label))
            bar.update()
        for folder in layouts:
            meta = os.path.join(tmp, folder, split)
            for name, lines in (
                ('image_ids.txt', ids),
                ('class_labels.txt', labels_txt),
                ('image_sizes.txt', sizes_txt),
                ('localization.txt', loc[folder]),
            ):
                if lines:
                    _write_lines(os.path.join(meta, name), lines)
    bar.close()
    if ignore_mask_lines in layouts.values():
        cv2.imwrite(os.path.join(tmp, NO_IGNORE), np.zeros((size, size), np.uint8))
    if instances:
        _write_lines(os.path.join(tmp, 'instances.txt'), instances)
    _write_lines(os.path.join(tmp, 'classes.txt'), classes)
    with open(os.path.join(tmp, 'README.txt'), 'w') as fh:
        fh.write(readme)
    contact_sheet(os.path.join(tmp, sheet[0]), tiles, classes, size, sheet[1], sheet[2])
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out


def stroke_render(
    photos: dict,
    pools: dict,
    size: int,
    seed: int,
    sizes: tuple = (0.3, 0.7),
    max_angle: float = 20.0,
    aspect: tuple = (0.8, 1.25),
) -> Callable:
    """`render` of a set of stroke objects (glyphs, digits): `pools[split][label]` lists the
    split's instances of a class as `(name, alpha float32 (h, w) in [0, 1])`. The `k`-th image
    of a class shows the instances in turn, reshuffled on each pass (so a split shows all its
    instances when it has as many images, each about equally often). Each image: a background
    crop, its instance, its mask's box `U(sizes)` of the image side on its longer side,
    width/height stretched by `U(aspect)`, rotated by `U(+-max_angle)` degrees (never flipped: a
    mirrored letter is not a letter), at a random place, in a random colour that stands out from
    the background under it (`stroke_colour`), shaded (`paint`)."""
    names = list(BACKGROUNDS)

    def instance(split, label, k):
        pool = pools[split][label]
        rounds = np.random.default_rng([seed, SPLITS.index(split), label, k // len(pool), 1 << 21])
        return pool[rounds.permutation(len(pool))[k % len(pool)]]

    def render(split, label, k, rng):
        name, alpha = instance(split, label, k)
        while True:
            image = background(photos, {}, names, size, rng)
            long_side = rng.uniform(*sizes) * size
            stretch = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
            warped = fit_stroke_object(alpha, long_side, stretch, rng.uniform(-max_angle, max_angle), size)
            y, x = place(image, warped, rng)
            h, w = warped.shape
            under = image[y : y + h, x : x + w][warped >= 0.5]
            obj = paint(warped, stroke_colour(under, rng), rng)
            mask = paste(image, obj, warped, y, x)
            if mask.any():
                return finish(image, rng), mask, mask_box(mask), name

    return render


def arguments(doc: str, num_train: int, num_val: int, num_test: int) -> argparse.ArgumentParser:
    """The command line every set script takes (its `--num_*` defaults given)."""
    p = argparse.ArgumentParser(description=doc.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (built in OUT.tmp, then renamed)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--size', type=int, default=96, help='image side in pixels')
    p.add_argument('--num_train', type=int, default=num_train)
    p.add_argument('--num_val', type=int, default=num_val, help='0 writes no val split')
    p.add_argument('--num_test', type=int, default=num_test)
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    p.add_argument('--no_progress', action='store_true')
    return p


def run(script: str, build: Callable[..., str], a: argparse.Namespace, num_classes: int, **options) -> str:
    """`build(out, seed, size, num_train, num_val, num_test, **options, overwrite=, progress=)`
    from parsed `arguments`; a bad argument or missing material exits with one line."""
    start = time.time()
    try:
        out = build(
            a.out,
            a.seed,
            a.size,
            a.num_train,
            a.num_val,
            a.num_test,
            **options,
            overwrite=a.overwrite,
            progress=not a.no_progress,
        )
    except (FileExistsError, ValueError, RuntimeError) as e:
        sys.exit(f'{script}: {e}')
    print(
        f'wrote {out} ({a.num_train}/{a.num_val}/{a.num_test} train/val/test, {num_classes} classes) '
        f'in {time.time() - start:.1f}s'
    )
    return out
