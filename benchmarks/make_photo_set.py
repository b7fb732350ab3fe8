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
    `paste_sets.BACKGROUNDS` other than the one the object comes from, showing at most 20 % of any class
    object of that photograph (so no second, unlabelled object of a class), flipped, tinted.
Each image: one object, scaled so that the square root of its box area is 15-60 % of the image
    side (longer side at most 85 %), rotated by up to 15 degrees, flipped at random, colour-jittered,
    pasted fully inside the image with a 1 px feathered edge; about 1 in 10 images is made grey.
    The GT mask is the pasted alpha >= 0.5 and the GT box its bounding rectangle
    `[x, y, x + w, y + h]` (cv2.boundingRect).

Output (paths relative to --out; the same arguments give byte-identical files):
    images/{train,val,test}/NNNNN.jpg           JPEG quality 90
    masks/{val,test}/NNNNN.png                  255 = object
    masks/no_ignore.png                         all 0 (no ignore regions; their MaskEvaluator needs a file)
    metadata/<split>/image_ids.txt              images/train/00000.jpg
                     class_labels.txt           images/train/00000.jpg,3
                     image_sizes.txt            images/train/00000.jpg,96,96
    metadata/{val,test}/localization.txt        --loc=masks (default), their OpenImages layout:
                                                images/val/00000.jpg,masks/val/00000.png,masks/no_ignore.png
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

import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paste_sets  # noqa: E402  (benchmarks/paste_sets.py: backgrounds, pasting, the layout writer)

# Object classes, in label order: (name, source photograph, shapes in the source's pixels).
# Shapes: ('poly', [(x, y), ...]) or ('ellipse', (cx, cy), (semi-axis x, semi-axis y)); the mask
# is their union, clipped to the photograph, and ('and', shape) intersects it with a shape.
OBJECTS = [
    (
        'cat',
        'chelsea',
        [
            ('poly', [(0, 0), (395, 0), (372, 50), (360, 100), (352, 160), (346, 230), (342, 300), (0, 300)]),
            ('and', ('ellipse', (200, 158), (205, 170))),
        ],
    ),
    (
        'coffee',
        'coffee',
        [
            ('ellipse', (278, 232), (203, 152)),
            ('ellipse', (291, 92), (118, 76)),
            ('poly', [(400, 72), (412, 64), (424, 70), (420, 90), (406, 150), (396, 150)]),
        ],
    ),
    (
        'rocket',
        'rocket',
        [
            (
                'poly',
                [
                    (322, 126),
                    (330, 132),
                    (334, 145),
                    (336, 175),
                    (334, 405),
                    (310, 405),
                    (308, 175),
                    (310, 145),
                    (314, 132),
                ],
            )
        ],
    ),
    (
        'astronaut',
        'astronaut',
        [
            (
                'poly',
                [
                    (175, 25),
                    (215, 15),
                    (260, 18),
                    (295, 50),
                    (300, 110),
                    (290, 150),
                    (305, 175),
                    (305, 230),
                    (340, 260),
                    (360, 300),
                    (365, 345),
                    (300, 380),
                    (285, 420),
                    (40, 420),
                    (45, 330),
                    (70, 270),
                    (110, 240),
                    (115, 200),
                    (150, 165),
                    (155, 110),
                    (150, 60),
                ],
            )
        ],
    ),
    (
        'shuttle',
        'astronaut',
        [
            (
                'poly',
                [
                    (384, 40),
                    (390, 38),
                    (398, 42),
                    (400, 10),
                    (410, 0),
                    (428, 0),
                    (436, 10),
                    (438, 40),
                    (444, 38),
                    (450, 44),
                    (451, 235),
                    (440, 262),
                    (378, 262),
                    (372, 228),
                    (352, 226),
                    (352, 212),
                    (376, 160),
                    (378, 48),
                ],
            )
        ],
    ),
    ('flower', 'flower', [('ellipse', (308, 222), (138, 137))]),
    (
        'hopper',
        'grace_hopper',
        [
            (
                'poly',
                [
                    (175, 55),
                    (230, 25),
                    (290, 25),
                    (350, 55),
                    (372, 120),
                    (360, 190),
                    (350, 260),
                    (330, 320),
                    (300, 345),
                    (230, 345),
                    (200, 320),
                    (175, 260),
                    (160, 190),
                    (152, 120),
                ],
            )
        ],
    ),
    ('coin', 'coins', 'threshold'),
    (
        'motorcycle',
        'motorcycle',
        [
            (
                'poly',
                [
                    (88, 198),
                    (120, 192),
                    (138, 160),
                    (147, 145),
                    (155, 158),
                    (230, 162),
                    (282, 184),
                    (340, 193),
                    (352, 176),
                    (415, 120),
                    (430, 125),
                    (470, 118),
                    (500, 106),
                    (520, 110),
                    (560, 128),
                    (585, 122),
                    (590, 135),
                    (566, 170),
                    (545, 195),
                    (540, 240),
                    (552, 265),
                    (600, 278),
                    (640, 300),
                    (668, 330),
                    (684, 372),
                    (670, 420),
                    (630, 450),
                    (580, 440),
                    (540, 410),
                    (515, 370),
                    (470, 372),
                    (400, 380),
                    (345, 372),
                    (338, 432),
                    (318, 432),
                    (318, 390),
                    (290, 385),
                    (250, 395),
                    (205, 400),
                    (160, 385),
                    (130, 350),
                    (122, 300),
                    (135, 262),
                    (120, 245),
                    (95, 230),
                ],
            )
        ],
    ),
    (
        'pagoda',
        'china',
        [
            (
                'poly',
                [
                    (198, 28),
                    (215, 28),
                    (215, 50),
                    (250, 75),
                    (300, 95),
                    (320, 115),
                    (295, 135),
                    (300, 150),
                    (330, 168),
                    (325, 185),
                    (320, 225),
                    (330, 235),
                    (350, 252),
                    (340, 270),
                    (345, 300),
                    (370, 330),
                    (350, 345),
                    (340, 355),
                    (300, 360),
                    (300, 390),
                    (210, 390),
                    (200, 360),
                    (60, 350),
                    (60, 330),
                    (80, 300),
                    (70, 280),
                    (62, 265),
                    (100, 240),
                    (100, 200),
                    (85, 185),
                    (100, 165),
                    (115, 150),
                    (95, 125),
                    (100, 110),
                    (145, 90),
                    (175, 70),
                    (198, 50),
                ],
            )
        ],
    ),
]
CLASSES = [name for name, _, _ in OBJECTS]

LOC_HELP = {
    'boxes': 'box lines path,x0,y0,x1,y1 (wsolevaluation\'s CUB / ILSVRC layout; the masks are still in masks/)',
    'masks': 'mask lines path,mask_path,ignore_path (wsolevaluation\'s OpenImages layout; the box is the mask\'s '
    'bounding rectangle)',
}

# localization.txt lines of a val/test image for each --loc
LOC_LINES = {'boxes': paste_sets.box_lines, 'masks': paste_sets.ignore_mask_lines}

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
            inst.append((im[y : y + h, x : x + w].copy(), m[y : y + h, x : x + w].astype(np.float32)))
            d = cv2.dilate(m, kernel)
            taken.setdefault(source, []).append((cv2.integral(d), int(d.sum())))
        out.append(inst)
    return out, taken


def _object(rgb, mask, size, rng):
    """The object resized, flipped, rotated and jittered: `(rgb float32, alpha float32)` cropped
    to the alpha's support, both `(h, w)` with h, w < size."""
    h, w = mask.shape
    scale = rng.uniform(0.15, 0.6) * size / np.sqrt(h * w)
    scale = min(scale, 0.85 * size / max(h, w))
    aspect = rng.uniform(0.9, 1.1)
    nw, nh = max(1, int(round(w * scale * aspect))), max(1, int(round(h * scale / aspect)))
    flip = rng.random() < 0.5
    rgb, alpha = paste_sets.warp_object(rgb, mask, nw, nh, flip, rng.uniform(-15, 15), size)
    return paste_sets.jitter(rgb, rng, 0.1, 0.2, 0.2), alpha


def render(photos, instances, taken, label: int, size: int, rng):
    """One image: `(rgb uint8 (size, size, 3), mask uint8 (size, size) 0/1, box [x0, y0, x1, y1])`."""
    source = OBJECTS[label][1]
    names = [n for n in paste_sets.BACKGROUNDS if n != source]
    while True:
        image = paste_sets.background(photos, taken, names, size, rng)
        rgb, mask = instances[label][rng.integers(len(instances[label]))]
        obj, alpha = _object(rgb, mask, size, rng)
        full = paste_sets.paste(image, obj, alpha, *paste_sets.place(image, alpha, rng))
        if full.any():
            break
    return paste_sets.finish(image, rng), full, paste_sets.mask_box(full)


def build(
    out: str,
    seed: int = 0,
    size: int = 96,
    num_train: int = 3000,
    num_val: int = 300,
    num_test: int = 600,
    loc: str = 'masks',
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Writes the set to `out` (via `out.tmp`) and returns `out`."""
    if loc not in LOC_HELP:
        raise ValueError(f'--loc must be masks or boxes, not {loc!r}')
    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    paste_sets.check_counts(size, counts)
    if os.path.exists(os.path.abspath(out)) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(out)} exists; pass --overwrite to replace it')
    photos = paste_sets.load_photos()
    instances, taken = object_instances(photos)

    def draw(split, label, k, rng):
        return (*render(photos, instances, taken, label, size, rng), None)

    readme = _provenance(seed, size, num_train, num_val, num_test, loc)
    return paste_sets.write_set(
        out,
        draw,
        CLASSES,
        counts,
        seed,
        size,
        readme,
        {'metadata': LOC_LINES[loc]},
        overwrite=overwrite,
        progress=progress,
        desc='photo set',
    )


def _provenance(seed, size, num_train, num_val, num_test, loc) -> str:
    import matplotlib
    import skimage
    import sklearn

    classes = ', '.join(f'{i}: {n} ({s})' for i, (n, s, _) in enumerate(OBJECTS))
    return PROVENANCE.format(
        skimage=skimage.__version__,
        sklearn=sklearn.__version__,
        mpl=matplotlib.__version__,
        seed=seed,
        size=size,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        classes=classes,
        loc=LOC_HELP[loc],
    )


def main(argv=None) -> str:
    p = paste_sets.arguments(__doc__, 3000, 300, 600)
    p.add_argument(
        '--loc',
        default='masks',
        choices=tuple(LOC_HELP),
        help="what val/test localization.txt lists (wsolevaluation's layouts): masks (the box is the "
        "mask's rectangle) or boxes",
    )
    a = p.parse_args(argv)
    return paste_sets.run('make_photo_set.py', build, a, len(CLASSES), loc=a.loc)


if __name__ == '__main__':
    main()
