"""Image and mask files -> uint8 pixels, as a viewer shows them, with errors that name the file.

Files are decoded with Pillow, strictly: a truncated or corrupt file is an error (OpenCV would
return a half-grey image and only print a warning). `to_uint8` turns every mode into 8-bit RGB:
grey, palette and CMYK through Pillow's `.convert('RGB')` as clovaai/wsolevaluation and the
paper's released code do, 16-bit and float images scaled (Pillow would clip them), transparency
composited over white. The EXIF orientation is ignored, as those protocols do (their boxes are in
stored pixels), unless the listed image size matches only the upright one (`read_image`), or the
caller asks for the upright image (predict).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps

from wsol_jax.errors import DataError

MASK_KINDS = ('binary', 'nonzero', 'flowers')
SKIP_HINT = 'or set config.data.on_bad_sample=skip to drop the sample'
# Pillow modes of one band wider than 8 bits: Pillow's convert() clips them to 0-255 (a 16-bit
# photo would read as white), so `to_uint8` scales them itself.
WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112


def listed_in(source: str) -> str:
    """`' (listed in SOURCE)'` for an error message, or nothing where the source is not known."""
    return f' (listed in {source})' if source else ''


def _open(path: str, what: str, source: str, hint: str) -> Image.Image:
    """The file decoded by Pillow (pixels loaded, file closed); raises `DataError` naming the file
    (and annotation line) if it is missing, truncated, corrupt or not an image. `hint` ends the
    message: what the caller does with such a file (the data pipeline: `on_bad_sample`)."""
    if not os.path.isfile(path):
        raise DataError(f'{what} file not found: {path}{listed_in(source)}; restore it, {hint}')
    # Pillow refuses a truncated file only while this flag is False; any library that set it
    # would make a cut-off JPEG decode as grey again, silently.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except MemoryError:
        raise
    except Exception as e:  # OSError, SyntaxError, ValueError, ...: Pillow's plugins differ
        reason = ' '.join(str(e).split()) or type(e).__name__
        raise DataError(
            f'cannot decode {what} {path}{listed_in(source)}: {reason}; the file is corrupt, truncated '
            f'or not an image: replace it, {hint}'
        ) from None


def _scale_wide(values: np.ndarray, mode: str) -> np.ndarray:
    """A single-band image of more than 8 bits, `(H, W)`, as uint8 by scaling (never clipping):
    16-bit modes (I;16, I;16B, ...), and 'I' (32-bit) whose values lie in [0, 65535] (16-bit PNG,
    PGM and TIFF files), by `round(v * 255 / 65535)` (so an 8-bit `x` saved as `257 * x` reads
    back as `x`); 'F' (float) in [0, 1] by `round(v * 255)`; anything else (negative, beyond
    16 bits, floats beyond [0, 1]) min-max stretched to [0, 255] (a constant image -> 0).
    Non-finite floats count as 0."""
    if mode == 'F':
        v = np.where(np.isfinite(values), values, 0).astype(np.float32)
        if v.size and v.min() >= 0 and v.max() <= 1:
            return np.rint(v * 255).astype(np.uint8)
    else:
        v = values
        if not v.size or (v.min() >= 0 and v.max() <= 65535):
            return ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        return np.zeros(v.shape, np.uint8)
    return np.rint((v.astype(np.float64) - lo) * 255 / (hi - lo)).astype(np.uint8)


def _has_alpha(image: Image.Image) -> bool:
    """An alpha band (RGBA, LA, PA) or a transparent colour or palette entry (PNG tRNS, GIF)."""
    return image.mode in ALPHA_MODES or 'transparency' in image.info


def _pixels_and_alpha(image: Image.Image, mode: str, with_alpha: bool):
    """`(pixels in mode, opacity (H, W) uint8 or None)` before compositing."""
    if image.mode in WIDE_MODES:
        values = np.asarray(image)
        grey = _scale_wide(values, image.mode)
        pixels = grey if mode == 'L' else np.repeat(grey[..., None], 3, axis=-1)
        trns = image.info.get('transparency')  # a raw 16-bit value, which Pillow's convert() ignores
        alpha = np.where(values == trns, 0, 255).astype(np.uint8) if with_alpha and isinstance(trns, int) else None
        return pixels, alpha
    if not (with_alpha and _has_alpha(image)):
        return np.asarray(image.convert(mode)), None
    rgba = image.convert('RGBA')  # applies a palette's or a colour's transparency (Pillow asks for this route)
    return np.asarray(rgba.convert(mode)), np.asarray(rgba.getchannel('A'))


def to_uint8(image: Image.Image, mode: str = 'RGB', background: Optional[tuple] = WHITE) -> np.ndarray:
    """A decoded Pillow image of any mode as uint8 pixels: `mode` 'RGB' `(H, W, 3)` or 'L' `(H, W)`.

    - 8-bit modes (1, L, P, RGB, CMYK, YCbCr, ...): Pillow's `convert` (CMYK multiplicatively:
      R = (255 - C)(255 - K) / 255, as Pillow does; '1' -> 0/255).
    - Wider single-band modes (I;16*, I, F): scaled to 8 bits, see `_scale_wide` (Pillow's
      `convert` would clip them: a 16-bit photo would read as white).
    - Transparency (an alpha band, a transparent palette entry or colour): composited over
      `background` (default white, as a viewer shows it on a page: dropping alpha would show
      whatever colour the hidden pixels hold); `background=None` drops it (masks).
    Raises `ValueError` for a mode Pillow cannot convert (e.g. LAB)."""
    pixels, alpha = _pixels_and_alpha(image, mode, background is not None)
    if alpha is None or alpha.min() == 255:
        return pixels
    a = alpha.astype(np.uint16)[..., None] if pixels.ndim == 3 else alpha.astype(np.uint16)
    bg = np.asarray(background if pixels.ndim == 3 else round(float(np.mean(background))), np.uint16)
    # out = p * a / 255 + bg * (1 - a / 255), rounded; at most 255 * 255 + 127: fits uint16
    return ((pixels * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 = stored as shown), 1 if absent or unreadable (as a
    viewer does with a broken EXIF block)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: the pixels are still fine
        return 1
    return value if value in range(1, 9) else 1


def _oriented(image: Image.Image, upright: bool, listed_size: Optional[tuple]) -> Image.Image:
    """`image` as a viewer shows it (EXIF orientation applied, `ImageOps.exif_transpose`) if
    `upright`, or if `listed_size` `(width, height)` matches only the upright size (the
    annotations were made on the upright image); else as stored."""
    orientation = _orientation(image)
    if orientation == 1:
        return image
    if not upright:
        w, h = image.size
        swapped = orientation in (5, 6, 7, 8)  # a quarter turn: width and height trade places
        if listed_size is None or not swapped or tuple(listed_size) != (h, w):
            return image
    return ImageOps.exif_transpose(image)


def _read_pixels(
    path: str,
    what: str,
    source: str,
    mode: str,
    upright: bool = False,
    listed_size: Optional[tuple] = None,
    background: Optional[tuple] = WHITE,
    hint: str = SKIP_HINT,
) -> np.ndarray:
    """The file decoded (`_open`), oriented (`_oriented`) and converted to `mode` ('RGB':
    `(H, W, 3)`, 'L': `(H, W)`) uint8 by `to_uint8`; every problem is a `DataError` naming it."""
    image = _oriented(_open(path, what, source, hint), upright, listed_size)
    try:
        return to_uint8(image, mode, background)
    except ValueError as e:
        raise DataError(
            f'cannot convert {what} {path}{listed_in(source)} from Pillow mode {image.mode} to {mode}: '
            f'{e}; save it as RGB, {hint}'
        ) from None


def read_image(
    path: str, source: str = '', upright: bool = False, listed_size: Optional[tuple] = None, hint: str = SKIP_HINT
) -> np.ndarray:
    """RGB uint8 `(H, W, 3)`, any mode converted by `to_uint8` (16-bit scaled, alpha over white).

    Orientation: the datasets' protocols (clovaai/wsolevaluation's loader and the paper's
    released code: `Image.open(path).convert('RGB')`) ignore the EXIF orientation, so their
    boxes are in stored pixels, and so are ours by default (`upright=False`); except where the
    annotations list the image's size (`listed_size`, wsolevaluation's image_sizes.txt) and it
    matches only the EXIF-transposed size: those annotations were made on the upright image,
    which is returned then. `upright=True` (predict): always as a viewer shows it. `hint` ends
    the message of an unreadable file (what the caller does with it)."""
    return _read_pixels(path, 'image', source, 'RGB', upright, listed_size, WHITE, hint)


def _read_levels(path: str, source: str) -> tuple[np.ndarray, float]:
    """A mask file's grey values `(H, W)` at their own bit depth (alpha dropped) and the full
    scale of that depth (255 for 8 bits, 65535 for 16 bits, 1 or the maximum for floats)."""
    image = _open(path, 'mask', source, SKIP_HINT)
    if image.mode not in WIDE_MODES:
        try:
            return to_uint8(image, 'L', None), 255.0
        except ValueError as e:
            raise DataError(
                f'cannot convert mask {path}{listed_in(source)} from Pillow mode {image.mode} to grey: '
                f'{e}; save it as a grey PNG, {SKIP_HINT}'
            ) from None
    values = np.asarray(image)
    if image.mode == 'F':
        values = np.where(np.isfinite(values), values, 0)
        return values, max(1.0, float(values.max(initial=0)))
    return values, 65535.0


def read_mask(path: str, kind: str, source: str = '') -> np.ndarray:
    """uint8 `(H, W)` with 1 = object. 'binary': above half the file's full scale (> 127 of 8
    bits, > 32767 of 16), or > 0 for a 0/1 mask; 'nonzero': any non-zero level (wsolevaluation's
    rule); 'flowers': not pure blue."""
    if kind not in MASK_KINDS:
        raise ValueError(f'mask kind must be one of {MASK_KINDS}, got {kind!r}')
    if kind == 'flowers':
        rgb = _read_pixels(path, 'mask', source, 'RGB', background=None).astype(int)
        background = (rgb[..., 0] < 50) & (rgb[..., 1] < 50) & (rgb[..., 2] > 200)  # (0, 0, 254), JPEG-tolerant
        return (~background).astype(np.uint8)
    values, full = _read_levels(path, source)
    if kind == 'nonzero':
        return (values > 0).astype(np.uint8)
    # An integer 0/1 mask (max 1) would be empty with the half-scale threshold (a float one is not).
    zero_one = values.dtype.kind in 'iu' and values.max(initial=0) == 1
    return (values > (0 if zero_one else full / 2)).astype(np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB image `(H, W, 3)` to `(size, size, 3)` (the paper's 256x256, aspect ratio
    not kept) with Pillow's bilinear filter, which antialiases when it shrinks: what
    torchvision's `Resize((256, 256))` does to the PIL images of the released code and of
    wsolevaluation (OpenCV's INTER_LINEAR would alias a 500 px photo down to 256)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))
