"""Stage predict: a trained localiser on a folder, glob or list of new images.

    python main.py --config=configs/synthetic.py:method1 --workdir=runs/demo --stage=predict \
        --config.predict.images=PATH [--config.predict.model=EXPORT_DIR] [--config.predict.out=DIR]

For each readable image, in `<out>/`: `maps/<name>.png` (the weight map at the image's own
resolution, 0-255; `.npy` too with `predict.save_npy`), `overlays/<name>.jpg` (map, box, class),
and one row in `predictions.csv` and `predictions.jsonl`. Unreadable files are skipped and listed
at the end and in `unreadable.txt`; nothing else stops the run.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from wsol_jax.data.decode import read_image
from wsol_jax.errors import ConfigError, DataError
from wsol_jax.localizer import Localizer, load_localizer

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
COLUMNS = ('path', 'x0', 'y0', 'x1', 'y1', 'class', 'class_name', 'probability', 'S', 'width', 'height')


def list_images(spec: str) -> tuple[list[str], str]:
    """`spec` is a folder (searched recursively), a glob pattern, or a text file of paths (one
    per line, relative to the file's folder). Returns the sorted paths and the root that output
    names are made relative to."""
    if not spec:
        raise ConfigError('predict needs images: --config.predict.images=FOLDER, a glob, or a text file of paths')
    if os.path.isdir(spec):
        root = os.path.abspath(spec)
        paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(spec) and spec.lower().endswith('.txt'):
        root = os.path.dirname(os.path.abspath(spec))
        with open(spec) as fh:
            paths = [os.path.join(root, line.strip()) for line in fh if line.strip() and not line.startswith('#')]
    elif os.path.isfile(spec):
        root, paths = os.path.dirname(os.path.abspath(spec)), [os.path.abspath(spec)]
    else:
        paths = [os.path.abspath(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else ''
        if not paths:
            raise ConfigError(f'predict.images={spec!r} is not a folder, a file or a glob that matches anything')
    if not paths:
        raise ConfigError(f'no images ({", ".join(IMAGE_EXTENSIONS[:4])}, ...) under predict.images={spec!r}')
    return sorted(paths), root


def output_name(path: str, root: str) -> str:
    """A flat, unique file stem for `path` (its path under `root`, `/` -> `__`)."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.splitext(rel)[0].replace(os.sep, '__').replace('..', '_')


def overlay(image_rgb: np.ndarray, weight_map: np.ndarray, box, label: str) -> np.ndarray:
    """The image with the map blended in (JET), the box (green) and the class: BGR uint8."""
    heat = cv2.applyColorMap((np.clip(weight_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), 0.55, heat, 0.45, 0)
    x0, y0, x1, y1 = (int(v) for v in box)
    thick = max(1, round(max(out.shape[:2]) / 200))
    if x1 > x0 and y1 > y0:
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thick)
    scale = max(0.35, max(out.shape[:2]) / 600)
    cv2.putText(out, label, (4, int(18 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, (255, 255, 255),
                thick, cv2.LINE_AA)
    return out


def _read_batches(paths: list[str], batch_size: int, unreadable: list) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    batch_paths, images = [], []
    for path in paths:
        try:
            images.append(read_image(path))
            batch_paths.append(path)
        except DataError as e:
            unreadable.append((path, str(e)))
        if len(images) == batch_size:
            yield batch_paths, images
            batch_paths, images = [], []
    if images:
        yield batch_paths, images


def predict(localizer: Localizer, images_spec: str, out_dir: str, save_npy: bool = False,
            batch_size: int = 32) -> dict:
    """Run `localizer` on the images of `images_spec`, write the outputs to `out_dir`; returns
    `{'written': n, 'unreadable': [(path, reason)], 'out': out_dir}`."""
    paths, root = list_images(images_spec)
    for sub in ('maps', 'overlays'):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    unreadable: list[tuple[str, str]] = []
    written = 0
    csv_path, jsonl_path = os.path.join(out_dir, 'predictions.csv'), os.path.join(out_dir, 'predictions.jsonl')
    with open(csv_path + '.tmp', 'w', newline='') as csv_fh, open(jsonl_path + '.tmp', 'w') as jsonl_fh:
        writer = csv.writer(csv_fh)
        writer.writerow(COLUMNS)
        with tqdm(total=len(paths), desc='predict', unit='img') as bar:
            for batch_paths, images in _read_batches(paths, batch_size, unreadable):
                pred = localizer(images)
                for i, (path, image) in enumerate(zip(batch_paths, images)):
                    name = output_name(path, root)
                    weight_map, box = pred.maps[i], pred.boxes[i]
                    cv2.imwrite(os.path.join(out_dir, 'maps', name + '.png'),
                                (np.clip(weight_map, 0, 1) * 255).round().astype(np.uint8))
                    if save_npy:
                        np.save(os.path.join(out_dir, 'maps', name + '.npy'), weight_map.astype(np.float32))
                    cls, prob = int(pred.classes[i]), float(pred.probabilities[i])
                    label = f'{localizer.class_name(cls)} {prob:.2f}'
                    cv2.imwrite(os.path.join(out_dir, 'overlays', name + '.jpg'), overlay(image, weight_map, box, label))
                    row = {'path': path, 'box': [int(v) for v in box], 'class': cls,
                           'class_name': localizer.class_name(cls), 'probability': prob,
                           'S': float(pred.scores[i]), 'width': image.shape[1], 'height': image.shape[0]}
                    writer.writerow([path, *row['box'], cls, row['class_name'], f'{prob:.6f}', f'{row["S"]:.6f}',
                                     row['width'], row['height']])
                    jsonl_fh.write(json.dumps(row) + '\n')
                    written += 1
                bar.update(written + len(unreadable) - bar.n)   # unreadable files count as done
    os.replace(csv_path + '.tmp', csv_path)
    os.replace(jsonl_path + '.tmp', jsonl_path)
    with open(os.path.join(out_dir, 'unreadable.txt'), 'w') as fh:
        fh.writelines(f'{p}\t{reason}\n' for p, reason in unreadable)
    print(f'[predict] {written} image(s) -> {out_dir} (predictions.csv, predictions.jsonl, maps/, overlays/)')
    if unreadable:
        print(f'[predict] {len(unreadable)} unreadable file(s) skipped (listed in unreadable.txt):')
        for path, reason in unreadable:
            print(f'  {path}: {reason}')
    return {'written': written, 'unreadable': unreadable, 'out': out_dir}


def run_predict(config, workdir: str) -> dict:
    """The stage as main.py runs it: the model from `predict.model` (an export) or the workdir."""
    cfg = config.predict
    localizer = load_localizer(cfg.model or workdir, batch_size=cfg.batch_size)
    out = cfg.out or os.path.join(workdir, 'predictions')
    return predict(localizer, cfg.images, out, cfg.save_npy, cfg.batch_size)
