"""A trained localiser on a folder, glob or list of new images (`predict`; the stage that runs it
from the command line is `wsol_jax.stages.predict`).

Images are read as a viewer shows them (EXIF orientation applied; 16-bit, float, palette,
transparency and CMYK files converted by `images.to_uint8`), so boxes, maps and overlays are in
the upright frame. For each image, in `<out>/`, under its path relative to the input root with
its extension kept (`photos/a/b.jpg` -> `maps/a/b.jpg.png`, `overlays/a/b.jpg.jpg`; a name too
long for the file system or that would clash gets a shortened unique one with a hash, see
`wsol_jax.image_paths`): the weight map at the image's own resolution (0-255; `.npy` too with
`predict.save_npy`), the overlay (map, box, class), and one row in `predictions.csv` and
`predictions.jsonl` (with the output names and a `warning` for an image under the networks'
stride or with a zero-area box). Unreadable files are skipped and listed at the end and in
`unreadable.txt`, images whose outputs could not be written in `write_failures.txt` (none of
their files is left); the count printed is the count of rows and of files of each kind.

Memory stays flat in the images' size: each image is decoded, resized to the network input and
released (decoded again for its overlay unless the batch's decoded pixels fit `HELD_PIXELS`),
and each map is resized to its image's resolution only while it is written.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Iterator, Optional

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data.images import read_image
from wsol_jax.errors import ConfigError, DataError
from wsol_jax.image_paths import OVERLAY_EXTENSION, list_images, output_stems
from wsol_jax.localizer import Localizer, map_to_image

COLUMNS = (
    'path',
    'x0',
    'y0',
    'x1',
    'y1',
    'class',
    'class_name',
    'probability',
    'S',
    'width',
    'height',
    'map',
    'overlay',
    'warning',
)
# The networks' total stride (ResNet and VGG alike): a side shorter than this holds less than one
# cell of f's last feature map, so the image is mostly made up by the upsampling to the input.
MIN_SIDE = 32
# Decoded pixels a batch keeps in memory for the overlays (3 bytes each: ~200 MB); images beyond
# it are decoded again when their overlay is written, so that memory does not grow with image size.
HELD_PIXELS = 1 << 26
READ_HINT = 'or remove it: predict skipped it and went on with the other images'
MAX_WARNINGS_SHOWN = 20


class WriteFailure(Exception):
    """An output of one image could not be written (the reason is the message)."""


def overlay(image_rgb: np.ndarray, map_u8: np.ndarray, box, label: str) -> np.ndarray:
    """The image with the map (uint8 `(H, W)`, 0-255) blended in (JET), the box (green) and the
    class: BGR uint8 `(H, W, 3)`. A writeable `image_rgb` is overwritten (the largest array: not
    copying it keeps memory at one image plus one heat map)."""
    heat = cv2.applyColorMap(map_u8, cv2.COLORMAP_JET)
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR, dst=image_rgb if image_rgb.flags.writeable else None)
    out = cv2.addWeighted(bgr, 0.55, heat, 0.45, 0, dst=heat)
    x0, y0, x1, y1 = (int(v) for v in box)
    thick = max(1, round(max(out.shape[:2]) / 200))
    if x1 > x0 and y1 > y0:
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thick)
    scale = max(0.35, max(out.shape[:2]) / 600)
    cv2.putText(
        out, label, (4, int(18 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, (255, 255, 255), thick, cv2.LINE_AA
    )
    return out


def image_warning(width: int, height: int, box) -> str:
    """'' or one line on why the box of a `width x height` image says little."""
    notes = []
    if min(width, height) < MIN_SIDE:
        notes.append(
            f"the image is {width}x{height} px, under the networks' stride of {MIN_SIDE} px on a side: "
            'its map and box are mostly the upsampling to the input size'
        )
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        notes.append(f'the box [{x0}, {y0}, {x1}, {y1}] has zero area')
    return '; '.join(notes)


def _write_atomically(path: str, tmp: str, write) -> None:
    """`write(file)` into `tmp`, then renamed to `path` (never a half-written output); an
    `OSError` becomes a `WriteFailure` naming `path`."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, 'wb') as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WriteFailure(f'cannot write {path}: {e.strerror or e}') from None


def _encoded(ext: str, image: np.ndarray) -> bytes:
    try:
        ok, buffer = cv2.imencode(ext, image)
    except cv2.error as e:
        raise WriteFailure(
            f'OpenCV cannot encode a {image.shape[1]}x{image.shape[0]} {ext}: {" ".join(str(e).split())[-200:]}'
        ) from None
    if not ok:
        raise WriteFailure(f'OpenCV could not encode a {image.shape[1]}x{image.shape[0]} {ext}')
    return buffer


@dataclasses.dataclass
class _Input:
    """One decoded image of a batch: its network input, own size and, if held, its pixels."""

    path: str
    stem: str
    input: np.ndarray
    size: tuple
    image: Optional[np.ndarray]


class PixelBudget:
    """The decoded pixels one batch keeps for its overlays: `keep(pixels)` for each image in turn
    says whether it stays decoded (while the kept ones fit `budget`; one that does not is released
    and decoded again when its overlay is written), so that a batch holds at most `budget` decoded
    pixels however large its photos are."""

    def __init__(self, budget: int = HELD_PIXELS):
        self.budget, self.held = budget, 0

    def keep(self, pixels: int) -> bool:
        if self.held + pixels > self.budget:
            return False
        self.held += pixels
        return True


def _read_batch(items, localizer: Localizer, held_pixels: int, unreadable: list) -> list[_Input]:
    """Decode, preprocess and (beyond `held_pixels` decoded pixels: `PixelBudget`) release each image in turn."""
    batch, budget = [], PixelBudget(held_pixels)
    for path, stem in items:
        try:
            image = read_image(path, upright=True, hint=READ_HINT)
        except DataError as e:
            unreadable.append((path, str(e)))
            continue
        inputs, (size,) = localizer.preprocess([image])
        keep = budget.keep(image.shape[0] * image.shape[1])
        batch.append(_Input(path, stem, inputs[0], size, image if keep else None))
        del image
    return batch


def _pixels_again(item: _Input) -> np.ndarray:
    """The image of `item`, decoded again for its overlay; a file changed since is a failure."""
    try:
        image = read_image(item.path, upright=True, hint=READ_HINT)
    except DataError as e:
        raise WriteFailure(f'could not read it again for its overlay: {e}') from None
    if (image.shape[1], image.shape[0]) != tuple(item.size):
        raise WriteFailure(
            f'it changed while predict ran ({item.size[0]}x{item.size[1]} -> {image.shape[1]}x{image.shape[0]})'
        )
    return image


def _write_outputs(out_dir: str, item: _Input, small_map: np.ndarray, box, label: str, save_npy: bool) -> dict:
    """The map (and `.npy`) and the overlay of one image, at its resolution, each write checked;
    returns the paths written (relative to `out_dir`). On any failure the files already written
    for this image are removed and `WriteFailure` is raised: an image has all its outputs or none."""
    tmp = os.path.join(out_dir, f'.writing-{os.getpid()}')
    paths = {'map': f'maps/{item.stem}.png', 'overlay': f'overlays/{item.stem}{OVERLAY_EXTENSION}'}
    if save_npy:
        paths['npy'] = f'maps/{item.stem}.npy'
    done = []
    try:
        weight_map = map_to_image(small_map, *item.size)  # (H, W) float32, one image at a time
        if save_npy:
            _write_atomically(os.path.join(out_dir, paths['npy']), tmp, lambda fh, m=weight_map: np.save(fh, m))
            done.append(paths['npy'])
        np.clip(weight_map, 0, 1, out=weight_map)
        weight_map *= 255
        map_u8 = np.rint(weight_map, out=weight_map).astype(np.uint8)
        del weight_map
        data = _encoded('.png', map_u8)
        _write_atomically(os.path.join(out_dir, paths['map']), tmp, lambda fh: fh.write(data))
        done.append(paths['map'])
        del data
        image = item.image if item.image is not None else _pixels_again(item)
        item.image = None
        data = _encoded(OVERLAY_EXTENSION, overlay(image, map_u8, box, label))
        del image
        _write_atomically(os.path.join(out_dir, paths['overlay']), tmp, lambda fh: fh.write(data))
    except WriteFailure:
        for rel in done:
            try:
                os.remove(os.path.join(out_dir, rel))
            except OSError:
                pass
        raise
    return paths


def _excluding(paths: list[str], stems: list[str], out_dir: str) -> tuple[list, int]:
    """`(path, stem)` pairs without the files inside `out_dir` (a second run on a folder that
    holds its own outputs would predict on its overlays)."""
    out_real = os.path.realpath(out_dir) + os.sep
    pairs = [(p, s) for p, s in zip(paths, stems) if not os.path.realpath(p).startswith(out_real)]
    return pairs, len(paths) - len(pairs)


def _make_out_dir(out_dir: str) -> None:
    try:
        for sub in ('maps', 'overlays'):
            os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f'cannot create the output folder predict.out={out_dir}: {e.strerror or e}; choose a writable folder'
        ) from None


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict(
    localizer: Localizer,
    images_spec: str,
    out_dir: str,
    save_npy: bool = False,
    batch_size: int = 32,
    held_pixels: int = HELD_PIXELS,
) -> dict:
    """Run `localizer` on the images of `images_spec`, write the outputs to `out_dir`; returns
    `{'written': n, 'unreadable': [(path, reason)], 'failed': [(path, reason)], 'warnings': n,
    'repeated': n, 'out': out_dir}`. `held_pixels`: see `HELD_PIXELS`."""
    listing = list_images(images_spec)
    _make_out_dir(out_dir)
    items, inside_out = _excluding(listing.paths, output_stems(listing.paths, listing.root, out_dir), out_dir)
    unreadable: list[tuple[str, str]] = [(p, f'cannot list the folder: {r}') for p, r in listing.unlisted]
    failed: list[tuple[str, str]] = []
    written = warned = 0
    csv_path, jsonl_path = os.path.join(out_dir, 'predictions.csv'), os.path.join(out_dir, 'predictions.jsonl')
    with open(csv_path + '.tmp', 'w', newline='') as csv_fh, open(jsonl_path + '.tmp', 'w') as jsonl_fh:
        writer = csv.writer(csv_fh)
        writer.writerow(COLUMNS)
        with tqdm(total=len(items), desc='predict', unit='img') as bar:
            for chunk in _batches(items, batch_size):
                batch = _read_batch(chunk, localizer, held_pixels, unreadable)
                pred = localizer.localize(
                    np.stack([b.input for b in batch]) if batch else [], [b.size for b in batch], resize_maps=False
                )
                for i, item in enumerate(batch):
                    cls, prob, box = int(pred.classes[i]), float(pred.probabilities[i]), pred.boxes[i]
                    try:
                        outputs = _write_outputs(
                            out_dir,
                            item,
                            pred.maps[i],
                            box,
                            f'{localizer.class_name(cls)} {prob:.2f}' if cls >= 0 else '',
                            save_npy,
                        )
                    except WriteFailure as e:
                        failed.append((item.path, str(e)))
                        continue
                    (width, height), warning = item.size, image_warning(*item.size, box)
                    if warning:
                        warned += 1
                        if warned <= MAX_WARNINGS_SHOWN:
                            tqdm.write(f'[predict] warning: {item.path}: {warning}')
                    row = {
                        'path': item.path,
                        'box': [int(v) for v in box],
                        'class': cls,
                        'class_name': localizer.class_name(cls),
                        'probability': prob,
                        'S': float(pred.scores[i]),
                        'width': width,
                        'height': height,
                        'map': outputs['map'],
                        'overlay': outputs['overlay'],
                        'warning': warning,
                    }
                    writer.writerow(
                        [
                            item.path,
                            *row['box'],
                            cls,
                            row['class_name'],
                            f'{prob:.6f}',
                            f'{row["S"]:.6f}',
                            width,
                            height,
                            row['map'],
                            row['overlay'],
                            warning,
                        ]
                    )
                    jsonl_fh.write(json.dumps(row) + '\n')
                    written += 1
                bar.update(len(chunk))
    os.replace(csv_path + '.tmp', csv_path)
    os.replace(jsonl_path + '.tmp', jsonl_path)
    for name, entries in (('unreadable.txt', unreadable), ('write_failures.txt', failed)):
        with open(os.path.join(out_dir, name), 'w') as fh:
            fh.writelines(f'{p}\t{reason}\n' for p, reason in entries)
    _report(out_dir, written, unreadable, failed, warned, listing.repeated, inside_out)
    return {
        'written': written,
        'unreadable': unreadable,
        'failed': failed,
        'warnings': warned,
        'repeated': listing.repeated,
        'out': out_dir,
    }


def _report(out_dir, written, unreadable, failed, warned, repeated, inside_out) -> None:
    """The end-of-run lines: the count written (= rows = maps = overlays), then what was not."""
    print(f'[predict] {written} image(s) written -> {out_dir} (predictions.csv, predictions.jsonl, maps/, overlays/)')
    if warned:
        print(f"[predict] {warned} image(s) with a warning (column 'warning' of predictions.csv)")
    if repeated:
        print(f'[predict] {repeated} path(s) led to a file already listed (links, or listed twice): predicted once')
    if inside_out:
        print(f'[predict] {inside_out} file(s) inside the output folder {out_dir} were not predicted')
    for entries, what in (
        (unreadable, 'unreadable file(s) skipped (listed in unreadable.txt)'),
        (failed, 'image(s) not written (listed in write_failures.txt)'),
    ):
        if entries:
            print(f'[predict] {len(entries)} {what}:')
            for path, reason in entries:
                print(f'  {path}: {reason}')
