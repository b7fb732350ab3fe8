"""Readers of the datasets' original on-disk layouts, each `-> ({split: [Record]}, num_classes)`.

Splits are 'train' and 'test', plus 'val' where the dataset defines one. Each record's image id
is the dataset's own name of the image: the path as its listing gives it (wsolevaluation's
image_ids.txt, CUB's images.txt relative to images/), otherwise the path relative to the root. Paths in error
messages point at the file and line that is wrong, and missing roots say what to download.

Two kinds of annotation problems: structural ones (a missing file, a line with the wrong number
of fields, an unparseable label or split flag, an image listed twice) raise `DataError` at once,
even with `on_bad_sample='skip'`, since they make the whole listing doubtful; a per-sample one (an
unparseable box or image size) is stored in `Record.error` and raised, or skipped with the
sample under `on_bad_sample='skip'`, when the split is decoded (`decode.decode_into`), where
boxes are also checked against the decoded image.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np

from wsol_jax.data.decode import Record
from wsol_jax.data.images import SKIP_HINT
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
        raise DataError(
            f'{path} not found; config.data.root must point at the unpacked dataset ({WHERE_TO_GET[source]})'
        )
    return path


def _lines(path: str, source: str, sep=None) -> list[tuple[int, list[str]]]:
    """Non-empty lines of an annotation file as `(line number, fields)`."""
    with open(_need(path, source)) as fh:
        return [(i, [f.strip() for f in line.strip().split(sep)]) for i, line in enumerate(fh, 1) if line.strip()]


def _fields(path, source, n, sep=None) -> dict[str, tuple[str, list[str]]]:
    """`{first field: ("file:line", rest)}`, checking each line has `n` fields and that no first
    field (an image id or path) is listed twice."""
    out = {}
    for i, f in _lines(path, source, sep):
        if len(f) != n:
            raise DataError(f'{path}:{i}: expected {n} fields, found {len(f)}: {" ".join(f)!r}; fix the line')
        if f[0] in out:
            raise DataError(f'{path}:{i}: {f[0]} is listed twice (also at {out[f[0]][0]}); remove one of the lines')
        out[f[0]] = (f'{path}:{i}', f[1:])
    return out


def _int(value, where: str, what: str) -> int:
    """`value` (text or a number) as an int; `DataError` naming `where` if it is not an integer."""
    try:
        number = float(value) if not isinstance(value, str) else None
        result = int(value) if number is None else int(number)
        if number is not None and number != result:
            raise ValueError
        return result
    except (TypeError, ValueError, OverflowError):
        raise DataError(f'{where}: {what} {value!r} is not an integer; fix the annotation') from None


def _box(values, where: str, convention: str = 'x0y0x1y1') -> tuple[np.ndarray, str]:
    """Four numbers -> `((1, 4) [x0, y0, x1, y1], '')`, or `((0, 4), error)` if one is not a
    number: a per-sample problem, raised or skipped when the split is decoded. `convention`
    'xywh': the numbers are x, y, width, height (CUB)."""
    numbers = []
    for v in values:
        try:
            numbers.append(float(np.asarray(v).item()))
        except (TypeError, ValueError):
            return np.zeros((0, 4)), f'{where}: box field {str(v)!r} is not a number; fix the annotation, {SKIP_HINT}'
    x0, y0, a, b = numbers
    x1, y1 = (x0 + a, y0 + b) if convention == 'xywh' else (a, b)
    return np.array([[x0, y0, x1, y1]]), ''


def _check_unique(records: Records) -> Records:
    """`DataError` if a split lists the same image twice (it would count twice)."""
    for split, rs in records.items():
        seen: dict[str, str] = {}
        for r in rs:
            if r.path in seen:
                raise DataError(
                    f'{r.source}: {r.path} is listed twice in the {split} split (also at '
                    f'{seen[r.path]}); remove one of the entries'
                )
            seen[r.path] = r.source
    return records


def cub(root: str) -> tuple[Records, int]:
    """CUB_200_2011: images.txt, image_class_labels.txt (1-based), train_test_split.txt (1: train,
    0: test), bounding_boxes.txt (x, y, w, h), and segmentations/<image path>.png if present."""
    images = _fields(os.path.join(root, 'images.txt'), 'cub', 2)
    labels = _fields(os.path.join(root, 'image_class_labels.txt'), 'cub', 2)
    split = _fields(os.path.join(root, 'train_test_split.txt'), 'cub', 2)
    boxes = _fields(os.path.join(root, 'bounding_boxes.txt'), 'cub', 5)
    seg_dir = os.path.join(root, 'segmentations')
    out: Records = {'train': [], 'test': []}
    for image_id, (where, (rel,)) in images.items():
        for table, name in (
            (labels, 'image_class_labels.txt'),
            (split, 'train_test_split.txt'),
            (boxes, 'bounding_boxes.txt'),
        ):
            if image_id not in table:
                raise DataError(f'{where}: image id {image_id} has no entry in {os.path.join(root, name)}')
        label_where, (label,) = labels[image_id]
        label = _int(label, label_where, 'class label')
        if label < 1:
            raise DataError(f'{label_where}: class label {label} must be at least 1 (CUB labels are 1-based)')
        split_where, (is_train,) = split[image_id]
        if is_train not in ('0', '1'):
            raise DataError(f'{split_where}: is_training_image must be 1 (train) or 0 (test), got {is_train!r}')
        box_where, box_fields = boxes[image_id]
        box, error = _box(box_fields, box_where, 'xywh')
        mask = os.path.join(seg_dir, os.path.splitext(rel)[0] + '.png') if os.path.isdir(seg_dir) else None
        out['train' if is_train == '1' else 'test'].append(
            Record(
                os.path.join(root, 'images', rel),
                label - 1,
                box,
                mask,
                'binary',
                where,
                box_sources=(box_where,),
                error=error,
                label_source=label_where,
                image_id=rel,
            )
        )
    return _check_unique(out), _num_classes(out)


def _loadmat(path: str, source: str):
    from scipy import io as sio

    try:
        return sio.loadmat(_need(path, source), squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError) as e:
        raise DataError(f'cannot read {path}: {e}') from None


def _mat_key(mat: dict, key: str, path: str):
    if key not in mat:
        raise DataError(f'{path} has no variable {key!r}; is it the right file?')
    return mat[key]


def _mat_field(annotation, name: str, where: str):
    """A field of one .mat struct; `DataError` naming `where` if it is missing."""
    if not hasattr(annotation, name):
        raise DataError(
            f'{where}: the annotation has no field {name!r}; use the devkit\'s cars_train_annos.mat and '
            'cars_test_annos_withlabels.mat'
        )
    return getattr(annotation, name)


def _cars_record(a, i: int, mat: str, root: str, folder: str) -> Record:
    """One Stanford Cars annotation (1-based inclusive box) -> a `Record`, box `[x1 - 1, y1 - 1, x2, y2]`;
    its id is `<folder>/<fname>`."""
    where = f'{mat}[{i}]'
    label = _int(_mat_field(a, 'class', where), where, 'class')
    if label < 1:
        raise DataError(f'{where}: class {label} must be at least 1 (Stanford Cars classes are 1-based)')
    box, error = _box([_mat_field(a, k, where) for k in ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2')], where)
    box[:, :2] -= 1
    image_id = f"{folder}/{_mat_field(a, 'fname', where)}"
    return Record(
        os.path.join(root, image_id), label - 1, box, source=where, box_sources=(where,), error=error, image_id=image_id
    )


def cars(root: str) -> tuple[Records, int]:
    """Stanford Cars: devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (in root or
    devkit/), fields bbox_x1, bbox_y1, bbox_x2, bbox_y2 (1-based, inclusive), class (1-based),
    fname; images in cars_train/ and cars_test/."""
    test_annos = os.path.join(root, 'cars_test_annos_withlabels.mat')
    if not os.path.exists(test_annos):
        test_annos = os.path.join(root, 'devkit', 'cars_test_annos_withlabels.mat')
    out: Records = {}
    for split, mat, folder in (
        ('train', os.path.join(root, 'devkit', 'cars_train_annos.mat'), 'cars_train'),
        ('test', test_annos, 'cars_test'),
    ):
        annos = np.atleast_1d(_mat_key(_loadmat(mat, 'cars'), 'annotations', mat))
        out[split] = [_cars_record(a, i, mat, root, folder) for i, a in enumerate(annos)]
    return _check_unique(out), _num_classes(out)


def _mat_ints(values, where: str, what: str) -> np.ndarray:
    """A .mat vector of integers as int64 `(N,)`; `DataError` naming `where[k]` otherwise."""
    values = np.atleast_1d(values)
    if values.dtype.kind in 'iu':
        return values.astype(np.int64)
    if values.dtype.kind == 'f' and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)  # MATLAB's doubles
    return np.array([_int(v, f'{where}[{k}]', what) for k, v in enumerate(values)], np.int64)


def flowers(root: str) -> tuple[Records, int]:
    """Oxford Flowers 102: jpg/image_XXXXX.jpg, imagelabels.mat (labels, 1-based), setid.mat
    (trnid, valid, tstid), segmim/segmim_XXXXX.jpg (blue = background). The dataset has no boxes:
    the GT box is the bounding rectangle of the mask (the paper reports PxAP only)."""
    labels_mat = os.path.join(root, 'imagelabels.mat')
    labels = _mat_ints(_mat_key(_loadmat(labels_mat, 'flowers'), 'labels', labels_mat), f'{labels_mat}:labels', 'label')
    if labels.size and labels.min() < 1:
        k = int(np.argmin(labels))
        raise DataError(f'{labels_mat}:labels[{k}]: label {labels[k]} must be at least 1 (the labels are 1-based)')
    setid_mat = os.path.join(root, 'setid.mat')
    setid = _loadmat(setid_mat, 'flowers')
    out: Records = {}
    for split, key in (('train', 'trnid'), ('val', 'valid'), ('test', 'tstid')):
        ids = _mat_ints(_mat_key(setid, key, setid_mat), f'{setid_mat}:{key}', 'image id')
        if ids.size and (ids.max() > len(labels) or ids.min() < 1):
            raise DataError(f'{setid_mat}: {key} refers to image ids outside 1..{len(labels)}')
        out[split] = [
            Record(
                os.path.join(root, 'jpg', f'image_{i:05d}.jpg'),
                int(labels[i - 1]) - 1,
                np.zeros((0, 4)),
                os.path.join(root, 'segmim', f'segmim_{i:05d}.jpg'),
                'flowers',
                f'{setid_mat}:{key}[{j}]',
                boxes_from_mask=True,
                label_source=f'{labels_mat}:labels[{i - 1}]',
                image_id=f'jpg/image_{i:05d}.jpg',
            )
            for j, i in enumerate(ids)
        ]
    return _check_unique(out), int(labels.max())


def tiny_imagenet(root: str) -> tuple[Records, int]:
    """tiny-imagenet-200: wnids.txt; train/<wnid>/images/*.JPEG with train/<wnid>/<wnid>_boxes.txt;
    val/images/*.JPEG with val/val_annotations.txt (file, wnid, x0, y0, x1, y1). Its labelled
    'val' split is the test split here (the official test split has no labels)."""
    wnids_path = os.path.join(root, 'wnids.txt')
    index: dict[str, int] = {}
    for i, f in _lines(wnids_path, 'tiny_imagenet'):
        if f[0] in index:
            raise DataError(f'{wnids_path}:{i}: class {f[0]} is listed twice; remove one of the lines')
        index[f[0]] = len(index)
    train = []
    for wnid in index:
        path = os.path.join(root, 'train', wnid, f'{wnid}_boxes.txt')
        for name, (where, f) in _fields(path, 'tiny_imagenet', 5).items():
            box, error = _box(f, where)
            image_id = f'train/{wnid}/images/{name}'
            train.append(
                Record(
                    os.path.join(root, image_id),
                    index[wnid],
                    box,
                    source=where,
                    box_sources=(where,),
                    error=error,
                    image_id=image_id,
                )
            )
    test = []
    path = os.path.join(root, 'val', 'val_annotations.txt')
    for name, (where, f) in _fields(path, 'tiny_imagenet', 6).items():
        if f[0] not in index:
            raise DataError(f'{where}: class {f[0]} is not in wnids.txt')
        box, error = _box(f[1:], where)
        test.append(
            Record(
                os.path.join(root, 'val', 'images', name),
                index[f[0]],
                box,
                source=where,
                box_sources=(where,),
                error=error,
                image_id=f'val/images/{name}',
            )
        )
    return _check_unique({'train': train, 'test': test}), len(index)


def _image_ids(path: str) -> dict[str, str]:
    """wsolevaluation image_ids.txt -> `{image path: "file:line"}`, in order; no path twice."""
    ids: dict[str, str] = {}
    for i, f in _lines(path, 'wsolevaluation', ','):
        if f[0] in ids:
            raise DataError(f'{path}:{i}: {f[0]} is listed twice (also at {ids[f[0]]}); remove one of the lines')
        ids[f[0]] = f'{path}:{i}'
    return ids


def _image_sizes(path: str) -> dict[str, tuple[str, Optional[tuple[int, int]], str]]:
    """Optional image_sizes.txt -> `{image path: ("file:line", (width, height) or None, error)}`."""
    if not os.path.exists(path):
        return {}
    out = {}
    for p, (where, (w, h)) in _fields(path, 'wsolevaluation', 3, ',').items():
        try:
            size = (int(w), int(h))
            out[p] = (where, size, '' if min(size) > 0 else f'{where}: image size {w}x{h} is not positive')
        except ValueError:
            out[p] = (
                where,
                None,
                f'{where}: image size {w!r},{h!r} is not a pair of integers; fix the line, {SKIP_HINT}',
            )
    return out


def _localization(path: str, ids: dict[str, str], root: str):
    """Optional localization.txt -> `(boxes, masks, ignore, errors)`: `{image path: ([box (1, 4)],
    ["file:line"])}`, `{image path: [mask path]}` (one line per object mask, united),
    `{image path: [ignore mask path]}` and `{image path: first per-sample error}`."""
    boxes: dict[str, tuple[list, list]] = {}
    masks: dict[str, list[str]] = {}
    ignore: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    if not os.path.exists(path):
        return boxes, masks, ignore, errors
    for i, f in _lines(path, 'wsolevaluation', ','):
        where = f'{path}:{i}'
        if f[0] not in ids:
            raise DataError(f'{where}: {f[0]} is not in image_ids.txt of this split; fix the path or add the image')
        if len(f) == 5:
            box, error = _box(f[1:], where)
            if error:
                errors.setdefault(f[0], error)
            b, w = boxes.setdefault(f[0], ([], []))
            b.append(box)
            w.append(where)
        elif len(f) in (2, 3):
            masks.setdefault(f[0], []).append(os.path.join(root, f[1]))
            if len(f) == 3 and f[2]:  # OpenImages: the image's ignore regions (the same file on each line)
                ignores = ignore.setdefault(f[0], [])
                if os.path.join(root, f[2]) not in ignores:
                    ignores.append(os.path.join(root, f[2]))
        else:
            raise DataError(f'{where}: expected path,x0,y0,x1,y1 or path,mask_path[,ignore_path]')
    return boxes, masks, ignore, errors


def wsolevaluation(root: str, metadata_dir: str = '') -> tuple[Records, int]:
    """clovaai/wsolevaluation metadata: `<metadata_dir>/<split>/image_ids.txt` (path),
    `class_labels.txt` (path,label), `image_sizes.txt` (path,w,h; optional, checked against the
    decoded image), `localization.txt` (path,x0,y0,x1,y1, one line per box; or
    path,mask_path[,ignore_path], one line per object mask, united; OpenImages' ignore regions are
    skipped by PxAP, as wsolevaluation does). Masks are read by wsolevaluation's rule (any non-zero
    grey value is object, or ignored; its `get_mask`), and the image ids are the listed paths.
    Image and mask paths are relative to `root`. Splits: train, test, and val if present. This
    is also the format for your own data."""
    metadata_dir = metadata_dir or os.path.join(root, 'metadata')
    out: Records = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(metadata_dir, split)
        if not os.path.isdir(folder):
            if split == 'val':
                continue
            _need(folder, 'wsolevaluation')
        ids = _image_ids(os.path.join(folder, 'image_ids.txt'))
        labels = _fields(os.path.join(folder, 'class_labels.txt'), 'wsolevaluation', 2, ',')
        sizes = _image_sizes(os.path.join(folder, 'image_sizes.txt'))
        boxes, masks, ignore, errors = _localization(os.path.join(folder, 'localization.txt'), ids, root)
        records = []
        for p, id_where in ids.items():
            if p not in labels:
                raise DataError(f'{id_where}: {p} has no line in {os.path.join(folder, "class_labels.txt")}')
            where, (label,) = labels[p]
            label = _int(label, where, 'class label')
            if label < 0:
                raise DataError(f'{where}: class label {label} must be at least 0 (labels are 0-based)')
            size_where, size, size_error = sizes.get(p, ('', None, ''))
            b, box_where = boxes.get(p, ([], []))
            mask_paths = masks.get(p, [])
            records.append(
                Record(
                    os.path.join(root, p),
                    label,
                    np.concatenate(b) if b else np.zeros((0, 4)),
                    mask_paths[0] if mask_paths else None,
                    'nonzero',
                    where,
                    boxes_from_mask=bool(mask_paths) and not b,
                    box_sources=tuple(box_where),
                    size=size,
                    size_source=size_where,
                    extra_mask_paths=tuple(mask_paths[1:]),
                    error=errors.get(p) or size_error,
                    ignore_mask_paths=tuple(ignore.get(p, ())),
                    image_id=p,
                )
            )
        out[split] = records
    return _check_unique(out), _num_classes(out)


FORMATS: dict[str, Callable[..., tuple[Records, int]]] = {
    'cub': cub,
    'cars': cars,
    'flowers': flowers,
    'tiny_imagenet': tiny_imagenet,
    'wsolevaluation': wsolevaluation,
}
