"""A small WSOL benchmark of real photographs: real object crops pasted at random places on
crops of other real photographs, written in clovaai/wsolevaluation's metadata layout.

    pip install scikit-image          # the photographs come with scikit-image, scikit-learn, matplotlib
    python benchmarks/make_photo_set.py --out=/tmp/photo_set [--seed=0 --size=96 \
        --num_train=3000 --num_val=300 --num_test=600]
    python main.py --config=configs/custom.py:method1 --config.data.root=/tmp/photo_set --workdir=runs/photo

Nothing is downloaded: every photograph is a sample image that an installed package ships
(scikit-image's `skimage.data`, scikit-learn's `load_sample_image`, matplotlib's sample data).

Classes (one object photograph each; `coin` has 24 instances):
    cat (chelsea), coffee (coffee), rocket (rocket), astronaut (astronaut), shuttle (the model
    space shuttle in astronaut), flower (sklearn flower.jpg), hopper (matplotlib grace_hopper.jpg),
    coin (coins), motorcycle (stereo_motorcycle, left view), pagoda (sklearn china.jpg)
Masks: hand-placed polygons and ellipses in the source photograph's pixels (`OBJECTS` below);
    the coins by an adaptive threshold of `coins` (each connected blob, holes filled, is a coin).
Backgrounds: a random square crop (35-100 % of the shorter side) of any photograph in
    `BACKGROUNDS` other than the one the object comes from, showing at most 20 % of any class
    object of that photograph (so no second, unlabelled object of a class), flipped, tinted.
Each image: one object, scaled so that the square root of its box area is 15-60 % of the image
    side (longer side at most 85 %), rotated by up to 15 degrees, flipped at random, colour-jittered,
    pasted fully inside the image with a 1 px feathered edge; about 1 in 10 images is made grey.
    The GT mask is the pasted alpha >= 0.5 and the GT box its bounding rectangle
    `[x, y, x + w, y + h]` (cv2.boundingRect).

Output (paths relative to --out; the same arguments give byte-identical files):
    images/{train,val,test}/NNNNN.jpg           JPEG quality 90
    masks/{val,test}/NNNNN.png                  255 = object
    masks/{val,test}/NNNNN_ignore.png           all 0 (no ignore regions; their MaskEvaluator needs the file)
    metadata/<split>/image_ids.txt              images/train/00000.jpg
                     class_labels.txt           images/train/00000.jpg,3
                     image_sizes.txt            images/train/00000.jpg,96,96
    metadata/{val,test}/localization.txt        --loc=masks (default), their OpenImages layout:
                                                images/val/00000.jpg,masks/val/00000.png,masks/val/00000_ignore.png
                                                --loc=boxes, their CUB / ILSVRC layout:
                                                images/val/00000.jpg,12,30,60,71
    classes.txt, README.txt (provenance and licences), preview.png (4x8 test images, boxes drawn)

localization.txt is in clovaai/wsolevaluation's layout, one kind of line per file as its loader
requires (`get_bounding_boxes` splits every line into 5 fields, `get_mask_paths` into 3, the
ignore file on the first line of each image). With masks, wsol_jax's reader takes each box as the
mask's bounding rectangle, which is the box the set defines (above), so the records get both the
box (GT-known / Top-1 loc, MaxBoxAcc) and the mask (PxAP). To score maps with their evaluator,
use the metadata that `--config.eval.save_maps=True` writes into the workdir (boxes and masks, in
the folders their `--metadata_root`/`--mask_root` expect).

The set is built in `<out>.tmp` and renamed to `<out>` when complete; an existing `<out>` is
replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

SPLITS = ('train', 'val', 'test')

# Object classes, in label order: (name, source photograph, shapes in the source's pixels).
# Shapes: ('poly', [(x, y), ...]) or ('ellipse', (cx, cy), (semi-axis x, semi-axis y)); the mask
# is their union, clipped to the photograph, and ('and', shape) intersects it with a shape.
OBJECTS = [
    ('cat', 'chelsea', [
        ('poly', [(0, 0), (395, 0), (372, 50), (360, 100), (352, 160), (346, 230), (342, 300), (0, 300)]),
        ('and', ('ellipse', (200, 158), (205, 170)))]),
    ('coffee', 'coffee', [
        ('ellipse', (278, 232), (203, 152)),
        ('ellipse', (291, 92), (118, 76)),
        ('poly', [(400, 72), (412, 64), (424, 70), (420, 90), (406, 150), (396, 150)])]),
    ('rocket', 'rocket', [
        ('poly', [(322, 126), (330, 132), (334, 145), (336, 175), (334, 405), (310, 405), (308, 175),
                  (310, 145), (314, 132)])]),
    ('astronaut', 'astronaut', [
        ('poly', [(175, 25), (215, 15), (260, 18), (295, 50), (300, 110), (290, 150), (305, 175),
                  (305, 230), (340, 260), (360, 300), (365, 345), (300, 380), (285, 420), (40, 420),
                  (45, 330), (70, 270), (110, 240), (115, 200), (150, 165), (155, 110), (150, 60)])]),
    ('shuttle', 'astronaut', [
        ('poly', [(384, 40), (390, 38), (398, 42), (400, 10), (410, 0), (428, 0), (436, 10), (438, 40),
                  (444, 38), (450, 44), (451, 235), (440, 262), (378, 262), (372, 228), (352, 226),
                  (352, 212), (376, 160), (378, 48)])]),
    ('flower', 'flower', [('ellipse', (308, 222), (138, 137))]),
    ('hopper', 'grace_hopper', [
        ('poly', [(175, 55), (230, 25), (290, 25), (350, 55), (372, 120), (360, 190), (350, 260),
                  (330, 320), (300, 345), (230, 345), (200, 320), (175, 260), (160, 190), (152, 120)])]),
    ('coin', 'coins', 'threshold'),
    ('motorcycle', 'motorcycle', [
        ('poly', [(88, 198), (120, 192), (138, 160), (147, 145), (155, 158), (230, 162), (282, 184), (340, 193),
                  (352, 176), (415, 120), (430, 125), (470, 118), (500, 106), (520, 110), (560, 128), (585, 122),
                  (590, 135), (566, 170), (545, 195), (540, 240), (552, 265), (600, 278), (640, 300), (668, 330),
                  (684, 372), (670, 420), (630, 450), (580, 440), (540, 410), (515, 370), (470, 372), (400, 380),
                  (345, 372), (338, 432), (318, 432), (318, 390), (290, 385), (250, 395), (205, 400), (160, 385),
                  (130, 350), (122, 300), (135, 262), (120, 245), (95, 230)])]),
    ('pagoda', 'china', [
        ('poly', [(198, 28), (215, 28), (215, 50), (250, 75), (300, 95), (320, 115), (295, 135),
                  (300, 150), (330, 168), (325, 185), (320, 225), (330, 235), (350, 252), (340, 270),
                  (345, 300), (370, 330), (350, 345), (340, 355), (300, 360), (300, 390), (210, 390),
                  (200, 360), (60, 350), (60, 330), (80, 300), (70, 280), (62, 265), (100, 240),
                  (100, 200), (85, 185), (100, 165), (115, 150), (95, 125), (100, 110), (145, 90),
                  (175, 70), (198, 50)])]),
]
CLASSES = [name for name, _, _ in OBJECTS]

# Photographs that backgrounds are cropped from (any but the object's own source).
LOC_HELP = {
    'boxes': 'box lines path,x0,y0,x1,y1 (wsolevaluation\'s CUB / ILSVRC layout; the masks are still in masks/)',
    'masks': 'mask lines path,mask_path,ignore_path (wsolevaluation\'s OpenImages layout; the box is the mask\'s '
             'bounding rectangle)'}

BACKGROUNDS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins', 'brick', 'grass', 'gravel',
               'moon', 'hubble_deep_field', 'immunohistochemistry', 'motorcycle', 'china', 'flower',
               'grace_hopper')

PROVENANCE = """\
Photographs: all ship with installed Python packages; nothing was downloaded. Licences as the
packages state them (check them yourself before redistributing this set; it is meant for local
benchmarks):
  scikit-image {skimage}, skimage.data (each function's docstring):
    astronaut    Eileen Collins, NASA Great Images: "No known copyright restrictions, released into
                 the public domain"                               -> classes astronaut, shuttle
    chelsea      "No copyright restrictions. CC0 by the photographer (Stefan van der Walt)" -> cat
    coffee       "No copyright restrictions. CC0 by the photographer (Rachel Michetti)"     -> coffee
    rocket       SpaceX Falcon 9, "released in the public domain" by SpaceX                -> rocket
    coins        Brooklyn Museum collection, "No known copyright restrictions"              -> coin
    stereo_motorcycle (left view)  Middlebury 2014 stereo benchmark (Scharstein et al., GCPR
                 2014); no licence stated in the docstring                                   -> motorcycle
    camera       "No copyright restrictions. CC0 by the photographer (Lav Varshney)"  (background only)
    brick, grass, gravel  CC0 textures (CC0Textures, DeviantArt)                       (background only)
    hubble_deep_field  NASA, "may be freely used in the public domain"                 (background only)
    immunohistochemistry  CMMI, "No known copyright restrictions"                      (background only)
    moon         no licence stated in the docstring                                    (background only)
  scikit-learn {sklearn}, sklearn/datasets/images/README.txt: CC BY 2.0 (creativecommons.org/licenses/by/2.0/)
    china.jpg    Flickr user danielbuechele                                                  -> pagoda
    flower.jpg   Flickr user vultilion (the README credits danielbuechele and links vultilion) -> flower
  matplotlib {mpl}, mpl-data/sample_data/grace_hopper.jpg: "sample data needed for some of
    matplotlib's examples" (no separate licence stated; the photograph is Grace Hopper's US Navy
    portrait)                                                                                -> hopper

Built by benchmarks/make_photo_set.py --seed={seed} --size={size} \\
  --num_train={num_train} --num_val={num_val} --num_test={num_test}
Classes (label: name (source photograph)): {classes}
Masks: hand-placed polygons and ellipses in the source photographs' pixels (OBJECTS in the script);
  coin: an adaptive threshold of `coins`, one instance per connected blob of >= 800 px, holes filled.
Backgrounds: square crops of the photographs above other than the object's own source, showing at
  most 20 % of any class object of that photograph.
Each image: one object pasted at a random place; the GT mask (masks/) is the pasted alpha >= 0.5,
  the GT box its bounding rectangle [x0, y0, x1, y1] with x1, y1 exclusive (cv2.boundingRect).
metadata/{{val,test}}/localization.txt: {loc}
"""


def _need_skimage():
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        sys.exit('make_photo_set.py needs scikit-image for its photographs: pip install scikit-image')


def load_photos() -> dict[str, np.ndarray]:
    """The photographs as RGB uint8 arrays (grey ones repeated over 3 channels)."""
    _need_skimage()
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos = {n: getattr(skimage.data, n)() for n in (
        'astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins', 'brick', 'grass', 'gravel', 'moon',
        'hubble_deep_field', 'immunohistochemistry')}
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


def _draw(shape, hw) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    if shape[0] == 'poly':
        cv2.fillPoly(m, [np.array(shape[1], np.int32)], 1)
    elif shape[0] == 'ellipse':
        cv2.ellipse(m, tuple(map(int, shape[1])), tuple(map(int, shape[2])), 0, 0, 360, 1, -1)
    else:
        raise ValueError(shape)
    return m


def source_mask(shapes, hw) -> np.ndarray:
    """uint8 `(H, W)` 0/1 mask of the union of `shapes` (then intersected with the 'and' ones)."""
    m = np.zeros(hw, np.uint8)
    for s in shapes:
        if s[0] != 'and':
            m |= _draw(s, hw)
    for s in shapes:
        if s[0] == 'and':
            m &= _draw(s[1], hw)
    return m


def coin_masks(gray: np.ndarray) -> list[np.ndarray]:
    """One 0/1 mask per coin of skimage's `coins`: adaptive threshold (the lighting is uneven),
    close and open, then each outer contour of at least 800 px, filled."""
    blur = cv2.GaussianBlur(gray, (5, 5), 0)
    b = (cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 61, -5) > 0).astype(np.uint8)
    b = cv2.morphologyEx(b, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    b = cv2.morphologyEx(b, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    contours, _ = cv2.findContours(b, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for c in sorted(contours, key=lambda c: tuple(cv2.boundingRect(c)[:2][::-1])):
        if cv2.contourArea(c) >= 800:
            m = np.zeros(gray.shape, np.uint8)
            cv2.drawContours(m, [c], -1, 1, -1)
            out.append(m)
    return out


def object_instances(photos):
    """Per class, its instances as `(rgb crop, float32 mask crop)` cropped to the mask's box; and
    per source photograph, `(integral image, area)` of each instance's mask dilated by 5 px, which
    keep background crops from showing the objects of the classes."""
    out, taken = [], {}
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    for name, source, shapes in OBJECTS:
        im = photos[source]
        masks = coin_masks(im[..., 0]) if shapes == 'threshold' else [source_mask(shapes, im.shape[:2])]
        inst = []
        for m in masks:
            x, y, w, h = cv2.boundingRect(m)
            if w == 0 or h == 0:
                raise RuntimeError(f'{name}: empty mask')
            inst.append((im[y:y + h, x:x + w].copy(), m[y:y + h, x:x + w].astype(np.float32)))
            d = cv2.dilate(m, kernel)
            taken.setdefault(source, []).append((cv2.integral(d), int(d.sum())))
        out.append(inst)
    return out, taken


def _jitter(im: np.ndarray, rng, gain: float, brightness: float, contrast: float) -> np.ndarray:
    """Per-channel gains, brightness and contrast on a float RGB image in [0, 255]."""
    im = im * rng.uniform(1 - gain, 1 + gain, 3)
    im = im * rng.uniform(1 - brightness, 1 + brightness)
    mean = im.mean()
    return (im - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean


def _background(photos, taken, names, size, rng) -> np.ndarray:
    """A random square crop (35-100 % of the shorter side) of one of `names` that shows at most
    20 % of any class object of that photograph, resized to `size`, flipped at random, tinted."""
    while True:
        name = names[rng.integers(len(names))]
        im = photos[name]
        h, w = im.shape[:2]
        for _ in range(20):
            side = int(round(rng.uniform(0.35, 1.0) * min(h, w)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            if name not in taken:
                break
            if all(t[y + side, x + side] - t[y, x + side] - t[y + side, x] + t[y, x] <= 0.2 * area
                   for t, area in taken[name]):
                break
        else:
            continue
        crop = cv2.resize(im[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return _jitter(crop.astype(np.float32), rng, 0.12, 0.25, 0.2)


def _object(rgb, mask, size, rng):
    """The object resized, flipped, rotated and jittered: `(rgb float32, alpha float32)` cropped
    to the alpha's support, both `(h, w)` with h, w < size."""
    h, w = mask.shape
    scale = rng.uniform(0.15, 0.6) * size / np.sqrt(h * w)
    scale = min(scale, 0.85 * size / max(h, w))
    aspect = rng.uniform(0.9, 1.1)
    nw, nh = max(1, int(round(w * scale * aspect))), max(1, int(round(h * scale / aspect)))
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    angle = rng.uniform(-15, 15)
    pad = 2
    rot = cv2.getRotationMatrix2D((nw / 2, nh / 2), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    bw, bh = int(np.ceil(nw * cos + nh * sin)) + 2 * pad, int(np.ceil(nw * sin + nh * cos)) + 2 * pad
    rot[0, 2] += bw / 2 - nw / 2
    rot[1, 2] += bh / 2 - nh / 2
    rgb = cv2.warpAffine(np.ascontiguousarray(rgb), rot, (bw, bh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), rot, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.6)          # feathered edge
    ys, xs = np.nonzero(alpha > 1e-3)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    if max(rgb.shape[:2]) > size - 2:                    # never at the default scales; keep it inside
        f = (size - 2) / max(rgb.shape[:2])
        nsz = (max(1, int(rgb.shape[1] * f)), max(1, int(rgb.shape[0] * f)))
        rgb = cv2.resize(rgb, nsz, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, nsz, interpolation=cv2.INTER_AREA)
    return _jitter(rgb, rng, 0.1, 0.2, 0.2), alpha


def render(photos, instances, taken, label: int, size: int, rng):
    """One image: `(rgb uint8 (size, size, 3), mask uint8 (size, size) 0/1, box [x0, y0, x1, y1])`."""
    source = OBJECTS[label][1]
    names = [n for n in BACKGROUNDS if n != source]
    while True:
        image = _background(photos, taken, names, size, rng)
        rgb, mask = instances[label][rng.integers(len(instances[label]))]
        obj, alpha = _object(rgb, mask, size, rng)
        h, w = alpha.shape
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        a = alpha[..., None]
        image[y:y + h, x:x + w] = a * obj + (1 - a) * image[y:y + h, x:x + w]
        full = np.zeros((size, size), np.uint8)
        full[y:y + h, x:x + w] = alpha >= 0.5
        if full.any():
            break
    if rng.random() < 0.1:
        image = np.repeat(image @ np.float32([0.299, 0.587, 0.114]), 3).reshape(size, size, 3)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(full)
    return image, full, [bx, by, bx + bw, by + bh]


def _labels(n: int, seed: int, split_id: int) -> np.ndarray:
    """Balanced labels (counts differ by at most one), shuffled."""
    return np.random.default_rng([seed, split_id, 1 << 20]).permutation(np.arange(n) % len(OBJECTS))


def _preview(path: str, tiles: list, size: int) -> None:
    """4x8 contact sheet of `(rgb, box, label)` with the boxes drawn and class names written."""
    cell = max(size, 96) * 2
    sheet = np.full((4 * (cell + 4), 8 * (cell + 4), 3), 255, np.uint8)
    for i, (rgb, box, label) in enumerate(tiles[:32]):
        f = cell / size
        tile = cv2.resize(rgb, (cell, cell), interpolation=cv2.INTER_NEAREST)
        x0, y0, x1, y1 = (int(round(v * f)) for v in box)
        cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
        cv2.putText(tile, CLASSES[label], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(tile, CLASSES[label], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
        r, c = divmod(i, 8)
        sheet[r * (cell + 4) + 2:r * (cell + 4) + 2 + cell, c * (cell + 4) + 2:c * (cell + 4) + 2 + cell] = tile
    cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def build(out: str, seed: int = 0, size: int = 96, num_train: int = 3000, num_val: int = 300,
          num_test: int = 600, loc: str = 'masks', overwrite: bool = False, progress: bool = True) -> str:
    """Writes the set to `out` (via `out.tmp`) and returns `out`."""
    if size < 32:
        raise ValueError('--size must be at least 32')
    if loc not in LOC_HELP:
        raise ValueError(f'--loc must be masks or boxes, not {loc!r}')
    if num_train <= 0 or num_test <= 0 or num_val < 0:
        raise ValueError('--num_train and --num_test must be positive, --num_val not negative')
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f'{out} exists; pass --overwrite to replace it')
    photos = load_photos()
    instances, taken = object_instances(photos)
    tmp = out + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    preview = []
    bar = tqdm(total=sum(counts.values()), desc='photo set', disable=not progress)
    for split_id, split in enumerate(SPLITS):
        n = counts[split]
        if n == 0:                                      # only val may be empty: no val/ folder
            continue
        meta = os.path.join(tmp, 'metadata', split)
        os.makedirs(meta)
        os.makedirs(os.path.join(tmp, 'images', split))
        if split != 'train':
            os.makedirs(os.path.join(tmp, 'masks', split))
        ids, labels_txt, sizes_txt, loc_txt = [], [], [], []
        for i, label in enumerate(_labels(n, seed, split_id)):
            label = int(label)
            rng = np.random.default_rng([seed, split_id, i])
            rgb, mask, box = render(photos, instances, taken, label, size, rng)
            rel = f'images/{split}/{i:05d}.jpg'
            cv2.imwrite(os.path.join(tmp, rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            ids.append(rel)
            labels_txt.append(f'{rel},{label}')
            sizes_txt.append(f'{rel},{size},{size}')
            if split != 'train':
                mrel, irel = f'masks/{split}/{i:05d}.png', f'masks/{split}/{i:05d}_ignore.png'
                cv2.imwrite(os.path.join(tmp, mrel), mask * 255)
                cv2.imwrite(os.path.join(tmp, irel), np.zeros_like(mask))
                if loc == 'boxes':
                    loc_txt.append(f'{rel},{box[0]},{box[1]},{box[2]},{box[3]}')
                else:
                    loc_txt.append(f'{rel},{mrel},{irel}')
                if split == 'test' and len(preview) < 32:
                    preview.append((rgb, box, label))
            bar.update()
        for name, lines in (('image_ids.txt', ids), ('class_labels.txt', labels_txt), ('image_sizes.txt', sizes_txt),
                            ('localization.txt', loc_txt)):
            if lines:
                with open(os.path.join(meta, name), 'w') as fh:
                    fh.write('\n'.join(lines) + '\n')
    bar.close()
    with open(os.path.join(tmp, 'classes.txt'), 'w') as fh:
        fh.write('\n'.join(CLASSES) + '\n')
    with open(os.path.join(tmp, 'README.txt'), 'w') as fh:
        fh.write(_provenance(seed, size, num_train, num_val, num_test, loc))
    _preview(os.path.join(tmp, 'preview.png'), preview, size)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out


def _provenance(seed, size, num_train, num_val, num_test, loc) -> str:
    import matplotlib
    import skimage
    import sklearn
    classes = ', '.join(f'{i}: {n} ({s})' for i, (n, s, _) in enumerate(OBJECTS))
    return PROVENANCE.format(skimage=skimage.__version__, sklearn=sklearn.__version__, mpl=matplotlib.__version__,
                             seed=seed, size=size, num_train=num_train, num_val=num_val, num_test=num_test,
                             classes=classes, loc=LOC_HELP[loc])


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (built in OUT.tmp, then renamed)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--size', type=int, default=96, help='image side in pixels')
    p.add_argument('--num_train', type=int, default=3000)
    p.add_argument('--num_val', type=int, default=300, help='0 writes no val split')
    p.add_argument('--num_test', type=int, default=600)
    p.add_argument('--loc', default='masks', choices=tuple(LOC_HELP),
                   help="what val/test localization.txt lists (wsolevaluation's layouts): masks (the box is the "
                        "mask's rectangle) or boxes")
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    p.add_argument('--no_progress', action='store_true')
    a = p.parse_args(argv)
    start = time.time()
    try:
        out = build(a.out, a.seed, a.size, a.num_train, a.num_val, a.num_test, a.loc, a.overwrite, not a.no_progress)
    except (FileExistsError, ValueError) as e:
        sys.exit(f'make_photo_set.py: {e}')
    print(f'wrote {out} ({a.num_train}/{a.num_val}/{a.num_test} train/val/test, {len(CLASSES)} classes) '
          f'in {time.time() - start:.1f}s')
    return out


if __name__ == '__main__':
    main()
