"""A WSOL benchmark of letters in real typefaces pasted on crops of real photographs, written in
clovaai/wsolevaluation's metadata layout; the typefaces of val and test are not in training.

    pip install scikit-image            # the photographs come with scikit-image, scikit-learn, matplotlib
    python benchmarks/make_glyph_set.py --out=/tmp/sets/glyphs [--seed=0 --size=96 \
        --num_train=2000 --num_val=300 --num_test=500]
    python main.py --config=configs/custom.py:method1,small --config.data.root=/tmp/sets/glyphs \
        --config.data.flip=False --workdir=runs/glyphs     # a mirrored letter is no letter

Nothing is downloaded. The glyphs are rendered (Pillow, FreeType) from the TrueType fonts that
matplotlib ships in mpl-data/fonts/ttf: DejaVu Sans, Sans Mono and Serif (4 faces each), STIX
General (4 faces) and 7 Computer Modern faces (BaKoMa).

Classes: 10 letters, each in both cases: A (A, a), B (B, b), E, G, H, K, M, R, S, T. An
instance is one letter case in one face ('DejaVuSerif-Bold:g'): upper and lower case of a
letter are often different shapes (A/a, G/g, R/r), so a class has real intra-class variation
besides the typefaces'. Instances are split by typeface (`FACES` below):
    train  DejaVu Sans (4 faces), STIX General (4), cmr10, cmb10, cmti10, cmmi10: 24 per class
    val    DejaVu Sans Mono (4), cmss10: 10 per class
    test   DejaVu Serif (4), cmtt10, cmsy10 (calligraphic capitals only): 11 per class
The images of a class show its instances in turn, reshuffled on each pass (each about equally
often); instances.txt names each image's.

Each image: a background crop (benchmarks/paste_sets.py: a random square crop of one of 16
photographs, flipped, tinted), one glyph rendered at a 128 px em (its antialiased coverage is the
alpha), stretched by 0.8-1.25 in width/height, rotated by up to 20 degrees (never flipped: a
mirrored letter is no letter), sized so that the longer side of its box is 30-70 % of the image
side, at a random place, in a random colour whose luma differs by at least 70 from the background
under it, shaded by a random ramp; about 1 in 10 images grey.
The GT mask is the pasted alpha >= 0.5, the GT box its bounding rectangle [x0, y0, x1, y1], x1
and y1 exclusive.

Output: see benchmarks/paste_sets.py (`metadata/` lists the masks in clovaai's OpenImages form,
`metadata_boxes/` the boxes in their CUB form; wsol_jax reads either), plus instances.txt,
classes.txt, README.txt and contact.png (8x8 test images, boxes drawn). The same arguments give
byte-identical files; val and test do not depend on --num_train.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paste_sets  # noqa: E402  (benchmarks/paste_sets.py: backgrounds, pasting, the layout writer)

CLASSES = ['A', 'B', 'E', 'G', 'H', 'K', 'M', 'R', 'S', 'T']

# (font file in matplotlib's mpl-data/fonts/ttf, split, cases it has letters in)
FACES = [
    ('DejaVuSans.ttf', 'train', 'ul'),
    ('DejaVuSans-Bold.ttf', 'train', 'ul'),
    ('DejaVuSans-Oblique.ttf', 'train', 'ul'),
    ('DejaVuSans-BoldOblique.ttf', 'train', 'ul'),
    ('STIXGeneral.ttf', 'train', 'ul'),
    ('STIXGeneralBol.ttf', 'train', 'ul'),
    ('STIXGeneralItalic.ttf', 'train', 'ul'),
    ('STIXGeneralBolIta.ttf', 'train', 'ul'),
    ('cmr10.ttf', 'train', 'ul'),
    ('cmb10.ttf', 'train', 'ul'),
    ('cmti10.ttf', 'train', 'ul'),
    ('cmmi10.ttf', 'train', 'ul'),
    ('DejaVuSansMono.ttf', 'val', 'ul'),
    ('DejaVuSansMono-Bold.ttf', 'val', 'ul'),
    ('DejaVuSansMono-Oblique.ttf', 'val', 'ul'),
    ('DejaVuSansMono-BoldOblique.ttf', 'val', 'ul'),
    ('cmss10.ttf', 'val', 'ul'),
    ('DejaVuSerif.ttf', 'test', 'ul'),
    ('DejaVuSerif-Bold.ttf', 'test', 'ul'),
    ('DejaVuSerif-Italic.ttf', 'test', 'ul'),
    ('DejaVuSerif-BoldItalic.ttf', 'test', 'ul'),
    ('cmtt10.ttf', 'test', 'ul'),
    ('cmsy10.ttf', 'test', 'u'),  # its lower-case code points are mathematical symbols
]

EM = 128  # px per em of the rendered glyph, before the warp shrinks it to the pasted size

STREAM = (2,)  # this set's random streams in paste_sets.write_set (not the other sets')

README = """\
Letters in real typefaces pasted on real photographs; built by benchmarks/make_glyph_set.py \\
  --seed={seed} --size={size} --num_train={num_train} --num_val={num_val} --num_test={num_test}
Glyphs: rendered by Pillow {pil} (FreeType) from the TrueType fonts of matplotlib {mpl}
  (mpl-data/fonts/ttf): DejaVu (free licence, LICENSE_DEJAVU there), STIX (SIL Open Font
  Licence, LICENSE_STIX), Computer Modern (BaKoMa fonts, matplotlib's LICENSE_BAKOMA).
Classes: {classes}, each letter in both cases; instances (letter case x face), split by face:
{faces}
  instances.txt: image path,face:character.
Each image: one glyph, box 30-70 % of the image side on its longer side, rotated by up to 20
  degrees, stretched 0.8-1.25, random colour contrasting with the background, random place.
GT mask (masks/): the pasted alpha (the glyph's antialiased coverage) >= 0.5; GT box: its
  bounding rectangle [x0, y0, x1, y1], x1 and y1 exclusive.
metadata/<split>/localization.txt: path,mask_path,masks/no_ignore.png (clovaai's OpenImages form;
  nothing is ignored). metadata_boxes/<split>/localization.txt: path,x0,y0,x1,y1 (their CUB form).
{credits}"""


def font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')


def glyph_alpha(path: str, char: str) -> np.ndarray:
    """float32 `(h, w)` antialiased coverage in [0, 1] of `char` in the font at `path`, cropped
    to its ink; `RuntimeError` if the font has no glyph for it."""
    from matplotlib.ft2font import FT2Font
    from PIL import Image, ImageDraw, ImageFont

    if FT2Font(path).get_char_index(ord(char)) == 0:
        raise RuntimeError(f'{path} has no glyph for {char!r}; fix FACES in make_glyph_set.py')
    font = ImageFont.truetype(path, EM)
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new('L', (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), char, font=font, fill=255)
    alpha = np.asarray(canvas, np.float32) / 255
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        raise RuntimeError(f'{path} renders {char!r} empty; fix FACES in make_glyph_set.py')
    return alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def instance_pools():
    """`pools[split][label]`: `[(name 'face:char', alpha)]` for every face of the split and case."""
    folder = font_dir()
    pools = {split: [[] for _ in CLASSES] for split in paste_sets.SPLITS}
    for file, split, cases in FACES:
        path = os.path.join(folder, file)
        if not os.path.exists(path):
            raise RuntimeError(f'{path} is missing: this matplotlib does not ship the fonts FACES lists')
        for label, letter in enumerate(CLASSES):
            for char in (letter.upper() if 'u' in cases else '') + (letter.lower() if 'l' in cases else ''):
                pools[split][label].append((f'{os.path.splitext(file)[0]}:{char}', glyph_alpha(path, char)))
    return pools


def _faces_text() -> str:
    lines = []
    for split in paste_sets.SPLITS:
        faces = [f'{os.path.splitext(f)[0]}{"" if c == "ul" else " (upper case)"}' for f, s, c in FACES if s == split]
        per_class = sum(len(c) for _, s, c in FACES if s == split)
        lines.append(f'  {split}: {", ".join(faces)} ({per_class} instances per class)')
    return '\n'.join(lines)


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
    import matplotlib
    import PIL

    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    paste_sets.check_counts(size, counts)
    if os.path.exists(os.path.abspath(out)) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(out)} exists; pass --overwrite to replace it')
    readme = README.format(
        seed=seed,
        size=size,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        pil=PIL.__version__,
        mpl=matplotlib.__version__,
        classes=', '.join(CLASSES),
        faces=_faces_text(),
        credits=paste_sets.background_credits(),
    )
    render = paste_sets.stroke_render(paste_sets.load_photos(), instance_pools(), size, seed)
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
        desc='glyph set',
    )


def main(argv=None) -> str:
    a = paste_sets.arguments(__doc__, 2000, 300, 500).parse_args(argv)
    return paste_sets.run('make_glyph_set.py', build, a, len(CLASSES))


if __name__ == '__main__':
    main()
