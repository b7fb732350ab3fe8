"""A WSOL benchmark of real handwritten digits pasted on crops of real photographs, written in
clovaai/wsolevaluation's metadata layout; the writers of the test digits are not in training.

    pip install scikit-image scikit-learn   # the digits come with scikit-learn, the photographs with
                                            # scikit-image, scikit-learn and matplotlib
    python benchmarks/make_digit_set.py --out=/tmp/sets/digits [--seed=0 --size=96 \
        --num_train=2000 --num_val=300 --num_test=500]
    python main.py --config=configs/custom.py:method1,small --config.data.root=/tmp/sets/digits \
        --config.data.flip=False --workdir=runs/digits     # a mirrored digit is no digit

Nothing is downloaded. The digits are scikit-learn's `load_digits`: the 1,797 digits of the
test part of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin and Kaynak,
1998), written on preprinted NIST forms and stored as 8x8 ink counts (0-16 per 4x4 block of the
32x32 bitmap). The file is a sequence of 14 filled-in forms with the same 130-digit template (13
of each digit; a few digits are missing from 5 forms): `FORM_STARTS` below, checked against the
template when the digits are read. One form is one writer's; the UCI description gives 13
writers for this part, so one writer may have filled two forms.

Classes: the digits 0-9 (about 180 instances each). Instances are split by form, so no writer
of a val/test form wrote a training digit (but see the remark on 13 writers and 14 forms):
    train  forms 0-8   (1,157 digits, 114-118 per class)
    val    forms 9-10  (258 digits, 25-26 per class)
    test   forms 11-13 (382 digits, 35-39 per class)
Every digit is used in its own split only. The images of a class show its digits in turn,
reshuffled on each pass: 500 test images show every test digit (50 images for 35-39 digits a
class), 2,000 training images each training digit once or twice, 20,000 about 17 times.
instances.txt names each image's digit: `images/test/00000.jpg,form12/1601` (form, index in
load_digits).

Each image: a background crop (benchmarks/paste_sets.py: a random square crop of one of 16
photographs, flipped, tinted), one digit, its 8x8 ink upsampled (bicubic, x16) into a stroke
alpha (0.5 where the ink covers half a cell), stretched by 0.8-1.25 in width/height, rotated
by up to 20 degrees (never flipped), sized so that the longer side of its box is 30-70 % of the
image side, at a random place, in a random colour whose luma differs by at least 70 from the
background under it, shaded by a random ramp; about 1 in 10 images grey.
The GT mask is the pasted alpha >= 0.5 (the ink's half-coverage contour), the GT box its bounding
rectangle [x0, y0, x1, y1], x1 and y1 exclusive.

Output: see benchmarks/paste_sets.py (`metadata/` lists the masks in clovaai's OpenImages form,
`metadata_boxes/` the boxes in their CUB form; wsol_jax reads either), plus instances.txt,
classes.txt, README.txt and contact.png (8x8 test images, boxes drawn). The same arguments give
byte-identical files; val and test do not depend on --num_train.
"""

from __future__ import annotations

import difflib
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paste_sets  # noqa: E402  (benchmarks/paste_sets.py: backgrounds, pasting, the layout writer)

CLASSES = [str(d) for d in range(10)]

# Index in load_digits of each form's first digit; the last form ends at 1,797.
FORM_STARTS = (0, 130, 256, 386, 516, 646, 776, 906, 1029, 1157, 1287, 1415, 1545, 1667)
SPLIT_FORMS = {'train': tuple(range(9)), 'val': (9, 10), 'test': (11, 12, 13)}

UPSAMPLE = 16  # 8x8 ink -> 128x128 alpha before the warp shrinks it to the pasted size
# The stroke's edge (alpha 0.5, the GT mask's contour) where the ink covers half a cell. A thinner
# stroke breaks: at 60 %, 12 % of the digits fell apart (0s and 9s into arcs; 4 % with the largest
# part's box under half the digit's), at 50 % 2 % (0.6 %): the paper's box is the largest contour's.
INK_EDGE = 0.5
STEEPNESS = 3.0  # a pen stroke's edge: alpha from 0 to 1 over a third of a cell

STREAM = (1,)  # this set's random streams in paste_sets.write_set (not the other sets')

README = """\
Handwritten digits pasted on real photographs; built by benchmarks/make_digit_set.py --seed={seed} \\
  --size={size} --num_train={num_train} --num_val={num_val} --num_test={num_test}
Digits: scikit-learn {sklearn} `load_digits`, the test part of the UCI "Optical Recognition of
  Handwritten Digits" data (E. Alpaydin, C. Kaynak, 1998; NIST forms, 8x8 ink counts). Licence as
  scikit-learn and the UCI repository state it; check it before redistributing this set.
Classes: {classes}; instances: the digits of 14 forms (one writer each), split by form:
  train forms 0-8 ({n_train} digits), val forms 9-10 ({n_val}), test forms 11-13 ({n_test});
  instances.txt: image path,form/index in load_digits.
Each image: one digit, box 30-70 % of the image side on its longer side, rotated by up to 20
  degrees, stretched 0.8-1.25, random colour contrasting with the background, random place.
GT mask (masks/): the pasted alpha >= 0.5; GT box: its bounding rectangle [x0, y0, x1, y1], x1 and
  y1 exclusive.
metadata/<split>/localization.txt: path,mask_path,masks/no_ignore.png (clovaai's OpenImages form;
  nothing is ignored). metadata_boxes/<split>/localization.txt: path,x0,y0,x1,y1 (their CUB form).
{credits}"""


def digit_forms(target: np.ndarray) -> list[tuple[int, int]]:
    """`(start, end)` of each form in load_digits' order, after checking that every form's
    labels are the first form's 130-digit template with at most a few digits missing (so a
    changed copy of the data stops here instead of splitting writers wrongly)."""
    bounds = list(zip(FORM_STARTS, FORM_STARTS[1:] + (len(target),)))
    template = ''.join(map(str, target[:130]))
    for k, (a, b) in enumerate(bounds):
        ratio = difflib.SequenceMatcher(None, template, ''.join(map(str, target[a:b])), autojunk=False).ratio()
        if len(target) != 1797 or b - a < 120 or ratio < 0.95:
            raise RuntimeError(
                f'load_digits does not have the 14 forms this script expects (form {k}: digits '
                f'{a}-{b}, {ratio:.2f} like the template); its FORM_STARTS need updating'
            )
    return bounds


def digit_alpha(ink: np.ndarray) -> np.ndarray:
    """8x8 ink counts (0-16) -> float32 stroke alpha `(h, w)` in [0, 1], cropped to the ink
    with a 1-cell margin, upsampled bicubically by `UPSAMPLE`, 0.5 at `INK_EDGE`."""
    ys, xs = np.nonzero(ink)
    ink = np.pad(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 16, 1)
    h, w = ink.shape
    up = cv2.resize(ink, (w * UPSAMPLE, h * UPSAMPLE), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.5 + STEEPNESS * (up - INK_EDGE), 0, 1).astype(np.float32)


def instance_pools():
    """`pools[split][digit]`: `[(name 'formFF/IIII', alpha)]`, and the forms' `(start, end)`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    bounds = digit_forms(digits.target)
    pools = {split: [[] for _ in CLASSES] for split in paste_sets.SPLITS}
    for split, forms in SPLIT_FORMS.items():
        for f in forms:
            for i in range(*bounds[f]):
                pools[split][int(digits.target[i])].append((f'form{f:02d}/{i:04d}', digit_alpha(digits.images[i])))
    return pools, bounds


def build(
    out: str,
    seed: int = 0,
    size: int = 96,
    num_train: int = 2000,
    num_val: int = 300,
    num_test: int = 500,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Writes the set to `out` (via `out.tmp`) and returns `out`."""
    import sklearn

    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    paste_sets.check_counts(size, counts)
    if os.path.exists(os.path.abspath(out)) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(out)} exists; pass --overwrite to replace it')
    pools, bounds = instance_pools()
    n = {s: sum(bounds[f][1] - bounds[f][0] for f in forms) for s, forms in SPLIT_FORMS.items()}
    readme = README.format(
        seed=seed,
        size=size,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        sklearn=sklearn.__version__,
        classes=', '.join(CLASSES),
        n_train=n['train'],
        n_val=n['val'],
        n_test=n['test'],
        credits=paste_sets.background_credits(),
    )
    render = paste_sets.stroke_render(paste_sets.load_photos(), pools, size, seed)
    return paste_sets.write_set(
        out,
        render,
        CLASSES,
        counts,
        seed,
        size,
        readme,
        paste_sets.STROKE_LAYOUTS,
        sheet=('contact.png', 8, 8),
        stream=STREAM,
        overwrite=overwrite,
        progress=progress,
        desc='digit set',
    )


def main(argv=None) -> str:
    a = paste_sets.arguments(__doc__, 2000, 300, 500).parse_args(argv)
    return paste_sets.run('make_digit_set.py', build, a, len(CLASSES))


if __name__ == '__main__':
    main()
