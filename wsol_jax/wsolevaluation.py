"""clovaai/wsolevaluation's protocol, and the files its `evaluation.py` reads unchanged.

Their protocol: the whole test image resized to 224x224 (no crop), one map per image, float in
[0, 1] and attaining 0 and 1 (`check_scoremap_validity`), read from
`<scoremap_root>/<image_id>.npy` (`CamDataset`). The ground truth comes from the original image's
pixels: a box of localization.txt (integers, `get_bounding_boxes`) becomes `int(x * 224 / W)`,
`int(y * 224 / H)` with `(W, H)` from image_sizes.txt (`resize_bbox`); a mask is read at its own
resolution and resized once to 224 with nearest neighbours (`load_mask_image`); object is
`> 0.5`, ignored is inside the image's ignore mask and not object (`get_mask`). Boxes are scored
by `BoxEvaluator` (`--dataset_name=CUB` or `ILSVRC`, the same code), masks by `MaskEvaluator`
(`--dataset_name=OpenImages` only; its localization.txt lines are `id,mask,ignore`, the ignore
file on the first line of every image, and mask paths are relative to `<mask_root>/OpenImages`).
Their loader reads one kind per localization.txt, so a split with boxes and masks needs two
metadata trees.

`eval.save_maps` writes, in the workdir (`write_scoremaps`, `write_metadata`, `write_masks`):

    scoremaps/<image_id>.npy                          float32 (224, 224), min-max normalised
    wsolevaluation_metadata/CUB/test/                 boxes: image_ids.txt, class_labels.txt,
                                                      image_sizes.txt, localization.txt (id,x0,y0,x1,y1)
    wsolevaluation_metadata/OpenImages/test/          masks, where the split has them: the same files,
                                                      localization.txt id,<id>_mask.png,<id>_ignore.png
    wsolevaluation_masks/OpenImages/<id>_mask.png     0/255 PNG at the original resolution (object)
                                   <id>_ignore.png    0/255 PNG (ignored: OpenImages' ignore regions)

The masks are written for every source, also where the dataset has mask files: they are the
masks wsol-jax scores (its reading of the source's files, united over instances), and the
source's own files would not always read the same way under their `> 0.5` rule (CUB's
segmentations hold several annotators' grey levels, Flowers' are JPEGs with a blue background);
a 0/255 PNG reads identically under both rules, and the workdir holds everything their
evaluator needs. `evaluator_commands` gives the commands that run it on these files.
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from wsol_jax import boxes as boxes_lib, metrics
from wsol_jax.errors import DataError

SIZE = 224  # their evaluation.py: _RESIZE_LENGTH
BOX_DATASET, MASK_DATASET = 'CUB', 'OpenImages'  # --dataset_name of their BoxEvaluator / MaskEvaluator
METADATA_FILES = ('image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt')


def image_ids(split) -> list[str]:
    """The split's image ids (`Split.names`; `000000`, ... where it has none), checked: each names
    a file inside the scoremap folder and a field of their comma-separated metadata."""
    ids = list(split.names) if split.names else [f'{i:06d}' for i in range(len(split))]
    seen = set()
    for image_id in ids:
        parts = image_id.replace('\\', '/').split('/')
        if not image_id or os.path.isabs(image_id) or '..' in parts or any(c in image_id for c in ',\n\r'):
            raise DataError(
                f'image id {image_id!r} cannot name a scoremap inside <workdir>/scoremaps (it is empty, '
                'absolute, goes up with "..", or holds a comma or a line break); rename the image in '
                'the dataset\'s listing, or run without --config.eval.save_maps'
            )
        if image_id in seen:
            raise DataError(
                f'image id {image_id!r} appears twice in the test split: their scoremaps would '
                'overwrite each other; make the ids unique'
            )
        seen.add(image_id)
    return ids


def scoremap_path(root: str, image_id: str) -> str:
    """Their `CamDataset`: `<scoremap_root>/<image_id>.npy`."""
    return os.path.join(root, image_id + '.npy')


def normalized_maps(maps) -> np.ndarray:
    """Maps of the whole image `(N, h, w)` -> what their evaluator reads: float32 `(N, 224, 224)`
    (bilinear), min-max normalised so that each attains 0 and 1."""
    maps = np.asarray(maps, np.float32)
    if maps.shape[1:] != (SIZE, SIZE):
        maps = np.stack([cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for m in maps])
    return boxes_lib.normalize_maps(maps).astype(np.float32)


def listed_boxes(boxes) -> np.ndarray:
    """Boxes `(N, K, 4)` float in original pixels -> the integers localization.txt lists (their
    loader parses `int(field)`): rounded to the nearest pixel, which keeps integer annotations
    (wsolevaluation's own, CUB's `x + w`) as they are and undoes float noise (TFDS' normalised
    boxes times the image size). Padding rows stay `PAD_BOX`."""
    boxes = np.asarray(boxes, np.float64)
    return np.where(metrics.valid_boxes(boxes)[..., None], np.rint(boxes), metrics.PAD_BOX).astype(np.int64)


def resize_boxes(boxes, sizes) -> np.ndarray:
    """Their `resize_bbox` of the listed boxes: `(N, K, 4)` float in original pixels and the
    images' `(N, 2)` `(width, height)` -> `(N, K, 4)` int32 at 224, `int(x * 224 / W)` evaluated
    as they do (float64, `x * 224` first, truncated). Padding rows stay `PAD_BOX`."""
    listed = listed_boxes(boxes).astype(np.float64)
    wh = np.asarray(sizes, np.float64)[:, None, :]
    extent = np.concatenate([wh, wh], axis=-1)  # (N, 1, 4): W, H, W, H
    resized = np.trunc(listed * float(SIZE) / extent)
    return np.where(metrics.valid_boxes(listed)[..., None], resized, metrics.PAD_BOX).astype(np.int32)


def write_scoremaps(root: str, ids: Sequence[str], maps: np.ndarray) -> None:
    """`maps[i]` as `<root>/<ids[i]>.npy` (float32)."""
    for image_id, m in zip(ids, maps):
        path = scoremap_path(root, image_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, np.asarray(m, np.float32))


def mask_files(image_id: str) -> tuple[str, str]:
    """The object and ignore mask of an image, relative to `<mask_root>/OpenImages`."""
    return f'{image_id}_mask.png', f'{image_id}_ignore.png'


def write_masks(mask_root: str, ids: Sequence[str], masks: Sequence[np.ndarray]) -> None:
    """Original-resolution masks (1 = object, `metrics.IGNORE` = ignored) as their two 0/255 PNGs
    per image under `<mask_root>/OpenImages/` (`mask_files`)."""
    folder = os.path.join(mask_root, MASK_DATASET)
    for image_id, mask in zip(ids, masks):
        mask = np.asarray(mask)
        for name, part in zip(mask_files(image_id), (mask == 1, mask == metrics.IGNORE)):
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, part.astype(np.uint8) * 255):
                raise OSError(f'cannot write {path}')


def _write_lines(path: str, lines: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fh:
        fh.write(''.join(line + '\n' for line in lines))


def metadata_lines(split, ids: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """`{dataset name: {file name: lines}}` of their metadata for the split: the box tree (every
    image has at least one box) and the mask tree (the split has masks)."""
    sizes = split.original_sizes
    common = {
        'image_ids.txt': list(ids),
        'class_labels.txt': [f'{i},{int(c)}' for i, c in zip(ids, split.labels)],
        'image_sizes.txt': [f'{i},{int(w)},{int(h)}' for i, (w, h) in zip(ids, sizes)],
    }
    trees = {}
    if split.boxes is not None and metrics.valid_boxes(split.boxes).any(axis=1).all():
        listed, valid = listed_boxes(split.boxes), metrics.valid_boxes(split.boxes)
        trees[BOX_DATASET] = {
            **common,
            'localization.txt': [
                f'{i},' + ','.join(str(int(v)) for v in box) for i, b, ok in zip(ids, listed, valid) for box in b[ok]
            ],
        }
    if split.masks is not None:
        trees[MASK_DATASET] = {**common, 'localization.txt': [f'{i},' + ','.join(mask_files(i)) for i in ids]}
    return trees


def write_metadata(metadata_root: str, trees: dict[str, dict[str, list[str]]], split_name: str = 'test') -> None:
    """Their metadata trees (`metadata_lines`) as `<metadata_root>/<dataset name>/<split_name>/<file>`."""
    for dataset, files in trees.items():
        for name, lines in files.items():
            _write_lines(os.path.join(metadata_root, dataset, split_name, name), lines)


def evaluator_commands(
    scoremap_root: str,
    metadata_root: str,
    mask_root: str,
    datasets: Sequence[str],
    interval: float = 0.01,
    ious: Sequence[int] = (30, 50, 70),
    split_name: str = 'test',
) -> dict[str, str]:
    """The commands that run their `evaluation.py` (in a clone of clovaai/wsolevaluation) on the
    written files: `{metric: command}` for MaxBoxAcc (v1: the largest contour, IoU 50),
    MaxBoxAccV2 (every contour, the mean over `ious`) and PxAP."""
    base = (
        f'python evaluation.py --scoremap_root={scoremap_root}/ --metadata_root={metadata_root}/ '
        f'--split={split_name} --cam_curve_interval={interval:g}'
    )
    out = {}
    if BOX_DATASET in datasets:
        out['maxboxacc_v1'] = f'{base} --dataset_name={BOX_DATASET} --multi_contour_eval=False --multi_iou_eval=False'
        out['maxboxacc_v2'] = (
            f'{base} --dataset_name={BOX_DATASET} --multi_contour_eval=True --multi_iou_eval=True '
            f'--iou_threshold_list {" ".join(map(str, ious))}'
        )
    if MASK_DATASET in datasets:
        out['pxap'] = f'{base} --dataset_name={MASK_DATASET} --mask_root={mask_root}/'
    return out
