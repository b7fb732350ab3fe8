"""Readers of the datasets' original on-disk layouts, each `-> ({split: [Record]}, num_classes)`.

Splits are 'train' and 'test', plus 'val' where the dataset defines one. Paths in error
messages point at the file and line that is wrong, and missing roots say what to download.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from wsol_jax.data.decode import Record
from wsol_jax.errors import DataError

Records = dict[str, list[Record]]

WHERE_TO_GET = {
    'cub': 'CUB_200_2011.tgz (and segmentations.tgz for PxAP) from https://www.vision.caltech.edu/datasets/cub_200_2011/',
    'cars': 'the Stanford Cars images and devkit (cars_train, cars_test, devkit/ with cars_test_annos_withlabels.mat)',
    'flowers': '102flowers.tgz, imagelabels.mat, setid.mat and 102segmentations.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/',
    'tiny_imagenet': 'tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip',
    'wsolevaluation': 'the metadata/ folder of https://github.com/clovaai/wsolevaluation and the images it lists',
}


def _num_classes(records: Records) -> int:
    """Classes seen in the data (the dataset configs pin the paper's counts)."""
    return 1 + max(r.label for rs in records.values() for r in rs)


def _need(path: str, source: str) -> str:
    if not os.path.exists(path):
        raise DataError(f'{path} not found; config.data.root must point at the unpacked dataset '
                        f'({WHERE_TO_GET[source]})')
    return path


def _lines(path: str, source: str, sep=None) -> list[tuple[int, list[str]]]:
    """Non-empty lines of an annotation file as `(line number, fields)`."""
    with open(_need(path, source)) as fh:
        return [(i, line.strip().split(sep)) for i, line in enumerate(fh, 1) if line.strip()]


def _fields(path, source, n, sep=None) -> dict[str, tuple[str, list[str]]]:
    """`{first field: ("file:line", rest)}`, checking each line has `n` fields."""
    out = {}
    for i, f in _lines(path, source, sep):
        if len(f) != n:
            raise DataError(f'{path}:{i}: expected {n} fields, found {len(f)}: {" ".join(f)!r}')
        out[f[0]] = (f'{path}:{i}', f[1:])
    return out


def cub(root: str) -> tuple[Records, int]:
    """CUB_200_2011: images.txt, image_class_labels.txt (1-based), train_test_split.txt,
    bounding_boxes.txt (x, y, w, h), and segmentations/<image path>.png if present."""
    images = _fields(os.path.join(root, 'images.txt'), 'cub', 2)
    labels = _fields(os.path.join(root, 'image_class_labels.txt'), 'cub', 2)
    split = _fields(os.path.join(root, 'train_test_split.txt'), 'cub', 2)
    boxes = _fields(os.path.join(root, 'bounding_boxes.txt'), 'cub', 5)
    seg_dir = os.path.join(root, 'segmentations')
    out: Records = {'train': [], 'test': []}
    for image_id, (where, (rel,)) in images.items():
        for table, name in ((labels, 'image_class_labels.txt'), (split, 'train_test_split.txt'),
                            (boxes, 'bounding_boxes.txt')):
            if image_id not in table:
                raise DataError(f'{where}: image id {image_id} has no entry in {os.path.join(root, name)}')
        x, y, w, h = map(float, boxes[image_id][1])
        mask = os.path.join(seg_dir, os.path.splitext(rel)[0] + '.png') if os.path.isdir(seg_dir) else None
        out['train' if split[image_id][1][0] == '1' else 'test'].append(Record(
            os.path.join(root, 'images', rel), int(labels[image_id][1][0]) - 1,
            np.array([[x, y, x + w, y + h]]), mask, 'binary', where))
    return out, _num_classes(out)


def _loadmat(path: str, source: str):
    from scipy import io as sio
    try:
        return sio.loadmat(_need(path, source), squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError) as e:
        raise DataError(f'cannot read {path}: {e}') from None


def cars(root: str) -> tuple[Records, int]:
    """Stanford Cars: devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (in root or
    devkit/), fields bbox_x1, bbox_y1, bbox_x2, bbox_y2 (1-based, inclusive), class (1-based),
    fname; images in cars_train/ and cars_test/."""
    test_annos = os.path.join(root, 'cars_test_annos_withlabels.mat')
    if not os.path.exists(test_annos):
        test_annos = os.path.join(root, 'devkit', 'cars_test_annos_withlabels.mat')
    out: Records = {}
    for split, mat, folder in (('train', os.path.join(root, 'devkit', 'cars_train_annos.mat'), 'cars_train'),
                               ('test', test_annos, 'cars_test')):
        annos = np.atleast_1d(_loadmat(mat, 'cars')['annotations'])
        out[split] = [Record(os.path.join(root, folder, str(a.fname)), int(getattr(a, 'class')) - 1,
                             np.array([[a.bbox_x1 - 1, a.bbox_y1 - 1, a.bbox_x2, a.bbox_y2]], np.float64),
                             source=f'{mat}[{i}]') for i, a in enumerate(annos)]
    return out, _num_classes(out)


def flowers(root: str) -> tuple[Records, int]:
    """Oxford Flowers 102: jpg/image_XXXXX.jpg, imagelabels.mat (labels, 1-based), setid.mat
    (trnid, valid, tstid), segmim/segmim_XXXXX.jpg (blue = background). The dataset has no boxes:
    the GT box is the bounding rectangle of the mask (the paper reports PxAP only)."""
    labels = np.atleast_1d(_loadmat(os.path.join(root, 'imagelabels.mat'), 'flowers')['labels']).astype(int)
    setid = _loadmat(os.path.join(root, 'setid.mat'), 'flowers')
    out: Records = {}
    for split, key in (('train', 'trnid'), ('val', 'valid'), ('test', 'tstid')):
        ids = np.atleast_1d(setid[key]).astype(int)
        if ids.size and (ids.max() > len(labels) or ids.min() < 1):
            raise DataError(f'{os.path.join(root, "setid.mat")}: {key} refers to image ids outside 1..{len(labels)}')
        out[split] = [Record(os.path.join(root, 'jpg', f'image_{i:05d}.jpg'), int(labels[i - 1]) - 1,
                             np.zeros((0, 4)), os.path.join(root, 'segmim', f'segmim_{i:05d}.jpg'), 'flowers',
                             f'setid.mat:{key}', boxes_from_mask=True) for i in ids]
    return out, int(labels.max())


def tiny_imagenet(root: str) -> tuple[Records, int]:
    """tiny-imagenet-200: wnids.txt; train/<wnid>/images/*.JPEG with train/<wnid>/<wnid>_boxes.txt;
    val/images/*.JPEG with val/val_annotations.txt (file, wnid, x0, y0, x1, y1). Its labelled
    'val' split is the test split here (the official test split has no labels)."""
    wnids = [f[0] for _, f in _lines(os.path.join(root, 'wnids.txt'), 'tiny_imagenet')]
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        path = os.path.join(root, 'train', wnid, f'{wnid}_boxes.txt')
        for name, (where, f) in _fields(path, 'tiny_imagenet', 5).items():
            train.append(Record(os.path.join(root, 'train', wnid, 'images', name), index[wnid],
                                np.array([list(map(float, f))]), source=where))
    test = []
    path = os.path.join(root, 'val', 'val_annotations.txt')
    for name, (where, f) in _fields(path, 'tiny_imagenet', 6).items():
        if f[0] not in index:
            raise DataError(f'{where}: class {f[0]} is not in wnids.txt')
        test.append(Record(os.path.join(root, 'val', 'images', name), index[f[0]],
                           np.array([list(map(float, f[1:]))]), source=where))
    return {'train': train, 'test': test}, len(wnids)


def wsolevaluation(root: str, metadata_dir: str = '') -> tuple[Records, int]:
    """clovaai/wsolevaluation metadata: `<metadata_dir>/<split>/image_ids.txt` (path),
    `class_labels.txt` (path,label), `image_sizes.txt` (path,w,h), `localization.txt`
    (path,x0,y0,x1,y1, one line per box; or path,mask_path[,ignore_path] for masks). Image and
    mask paths are relative to `root`. Splits: train, test, and val if present. This is also the
    format for your own data."""
    metadata_dir = metadata_dir or os.path.join(root, 'metadata')
    out: Records = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(metadata_dir, split)
        if not os.path.isdir(folder):
            if split == 'val':
                continue
            _need(folder, 'wsolevaluation')
        ids = [f[0] for _, f in _lines(os.path.join(folder, 'image_ids.txt'), 'wsolevaluation', ',')]
        labels = {p: (w, f[0]) for p, (w, f) in _fields(os.path.join(folder, 'class_labels.txt'),
                                                       'wsolevaluation', 2, ',').items()}
        boxes: dict[str, list] = {}
        masks: dict[str, str] = {}
        loc = os.path.join(folder, 'localization.txt')
        if os.path.exists(loc):
            for i, f in _lines(loc, 'wsolevaluation', ','):
                if len(f) == 5:
                    boxes.setdefault(f[0], []).append(list(map(float, f[1:])))
                elif len(f) in (2, 3):
                    masks[f[0]] = os.path.join(root, f[1])
                else:
                    raise DataError(f'{loc}:{i}: expected path,x0,y0,x1,y1 or path,mask_path[,ignore_path]')
        records = []
        for p in ids:
            if p not in labels:
                raise DataError(f'{os.path.join(folder, "image_ids.txt")}: {p} has no line in class_labels.txt')
            where, label = labels[p]
            records.append(Record(os.path.join(root, p), int(label), np.array(boxes.get(p, []), np.float64).reshape(-1, 4),
                                  masks.get(p), 'binary', where, boxes_from_mask=p in masks and p not in boxes))
        out[split] = records
    return out, _num_classes(out)


FORMATS: dict[str, Callable[..., tuple[Records, int]]] = {
    'cub': cub, 'cars': cars, 'flowers': flowers, 'tiny_imagenet': tiny_imagenet,
    'wsolevaluation': wsolevaluation}
