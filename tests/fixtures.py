"""Small datasets written in the real on-disk formats (generated JPEGs + annotation files laid
out exactly as the original archives), for the loaders' tests.

Every image is `W x H` = 320 x 240 with one coloured rectangle (the object) on noise; the object
box is `[x0, y0, x1, y1]` = `[x, y, x + w, y + h]` in pixels.
"""

import os

import cv2
import numpy as np

W, H = 320, 240


def make_image(rng, box):
    image = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = rng.integers(150, 255, 3, dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 255
    return image, mask


def random_box(rng):
    x0, y0 = rng.integers(10, 120), rng.integers(10, 100)
    return [int(x0), int(y0), int(x0 + rng.integers(60, 180)), int(y0 + rng.integers(50, 120))]


def _write_jpg(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def _write_image(path, image):
    """An RGB image, encoded by the path's suffix (.jpg/.JPEG at quality 95, .png lossless)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def damage(path, how):
    """Break an image file the ways real downloads break: 'truncate' keeps its first 40 % of
    bytes (an interrupted copy), 'random' replaces it by random bytes of the same length (a file
    of another kind with an image suffix), 'empty' leaves 0 bytes."""
    data = open(path, 'rb').read()
    if how == 'truncate':
        data = data[: int(0.4 * len(data))]
    elif how == 'random':
        data = np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    elif how == 'empty':
        data = b''
    else:
        raise ValueError(how)
    with open(path, 'wb') as fh:
        fh.write(data)


def set_line(path, number, text):
    """Replace line `number` (1-based) of an annotation file by `text`; `number` one past the
    end appends it."""
    with open(path) as fh:
        lines = fh.read().splitlines()
    if number == len(lines) + 1:
        lines.append(text)
    else:
        lines[number - 1] = text
    with open(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')


def get_line(path, number):
    with open(path) as fh:
        return fh.read().splitlines()[number - 1]


def write_cub(root, num_classes=4, per_class=6, segmentations=True, seed=0, first_box=(32, 48, 192, 144)):
    """CUB_200_2011 layout. Returns `{image_id: (relative path, label0, box, is_train)}`."""
    rng = np.random.default_rng(seed)
    meta, lines = {}, {k: [] for k in ('images', 'labels', 'split', 'boxes')}
    image_id = 0
    for c in range(num_classes):
        folder = f'{c + 1:03d}.Bird_{c}'
        for j in range(per_class):
            image_id += 1
            rel = f'{folder}/Bird_{c}_{j:04d}.jpg'
            box = list(first_box) if image_id == 1 else random_box(rng)
            image, mask = make_image(rng, box)
            _write_jpg(os.path.join(root, 'images', rel), image)
            if segmentations:
                seg = os.path.join(root, 'segmentations', rel[:-4] + '.png')
                os.makedirs(os.path.dirname(seg), exist_ok=True)
                cv2.imwrite(seg, mask)
            is_train = int(j < per_class // 2)
            lines['images'].append(f'{image_id} {rel}')
            lines['labels'].append(f'{image_id} {c + 1}')
            lines['split'].append(f'{image_id} {is_train}')
            x0, y0, x1, y1 = box
            lines['boxes'].append(f'{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}')
            meta[image_id] = (rel, c, box, is_train)
    for name, key in (
        ('images.txt', 'images'),
        ('image_class_labels.txt', 'labels'),
        ('train_test_split.txt', 'split'),
        ('bounding_boxes.txt', 'boxes'),
    ):
        with open(os.path.join(root, name), 'w') as fh:
            fh.write('\n'.join(lines[key]) + '\n')
    return meta


def _mat_annotations(rows):
    from scipy import io as sio  # noqa: F401

    dtype = [('bbox_x1', 'O'), ('bbox_y1', 'O'), ('bbox_x2', 'O'), ('bbox_y2', 'O'), ('class', 'O'), ('fname', 'O')]
    arr = np.zeros((1, len(rows)), dtype=dtype)
    for i, r in enumerate(rows):
        arr[0, i] = tuple(r)
    return arr


def write_cars(root, num_classes=3, per_split=6, seed=1, edits=None):
    """Stanford Cars layout (1-based inclusive boxes in .mat struct arrays). `edits`
    `{(split, i): {field: value}}` overrides fields of annotation `i` (0-based)."""
    from scipy import io as sio

    rng = np.random.default_rng(seed)
    meta = {}
    for split, folder, mat in (
        ('train', 'cars_train', 'devkit/cars_train_annos.mat'),
        ('test', 'cars_test', 'devkit/cars_test_annos_withlabels.mat'),
    ):
        rows = []
        for i in range(per_split):
            box = random_box(rng)
            image, _ = make_image(rng, box)
            fname = f'{i + 1:05d}.jpg'
            _write_jpg(os.path.join(root, folder, fname), image)
            x0, y0, x1, y1 = box
            row = dict(
                bbox_x1=np.uint8(x0 + 1),
                bbox_y1=np.uint8(y0 + 1),
                bbox_x2=np.uint16(x1),
                bbox_y2=np.uint16(y1),
                **{'class': np.uint8(i % num_classes + 1)},
                fname=fname,
            )
            row.update((edits or {}).get((split, i), {}))
            rows.append([row[k] for k in ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')])
            meta[(split, fname)] = (i % num_classes, box)
        os.makedirs(os.path.join(root, 'devkit'), exist_ok=True)
        sio.savemat(os.path.join(root, mat), {'annotations': _mat_annotations(rows)})
    return meta


def write_flowers(root, num_classes=3, n=12, seed=2, label_values=None, setid=None):
    """Oxford Flowers 102 layout: jpg/, segmim/ (blue background), imagelabels.mat, setid.mat.
    Images 3k+1, 3k+2, 3k+3 go to train, valid, test, and the labels cycle every three images,
    so that each split holds every class. `label_values` replaces the stored labels and `setid`
    (`{key: ids}`) the stored splits, to write broken files."""
    from scipy import io as sio

    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // 3) % num_classes + 1
    boxes = {}
    for i in range(1, n + 1):
        box = random_box(rng)
        image, mask = make_image(rng, box)
        _write_jpg(os.path.join(root, 'jpg', f'image_{i:05d}.jpg'), image)
        seg = image.copy()
        seg[mask == 0] = (0, 0, 254)
        _write_jpg(os.path.join(root, 'segmim', f'segmim_{i:05d}.jpg'), seg)
        boxes[i] = box
    stored = labels.astype(np.uint8) if label_values is None else np.asarray(label_values)
    sio.savemat(os.path.join(root, 'imagelabels.mat'), {'labels': stored[None]})
    ids = np.arange(1, n + 1)
    splits = {'trnid': ids[0::3], 'valid': ids[1::3], 'tstid': ids[2::3]}
    splits.update(setid or {})
    sio.savemat(os.path.join(root, 'setid.mat'), {k: np.asarray(v)[None] for k, v in splits.items()})
    return labels - 1, boxes


def write_tiny_imagenet(root, wnids=('n01443537', 'n01629819', 'n01641577'), per_class=4, seed=3):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'wnids.txt'), 'w') as fh:
        fh.write('\n'.join(wnids) + '\n')
    meta = {}
    for w in wnids:
        lines = []
        for j in range(per_class):
            box = random_box(rng)
            image, _ = make_image(rng, box)
            name = f'{w}_{j}.JPEG'
            _write_jpg(os.path.join(root, 'train', w, 'images', name), image)
            lines.append(name + '\t' + '\t'.join(map(str, box)))
        with open(os.path.join(root, 'train', w, f'{w}_boxes.txt'), 'w') as fh:
            fh.write('\n'.join(lines) + '\n')
    lines = []
    for i in range(2 * len(wnids)):
        box = random_box(rng)
        image, _ = make_image(rng, box)
        name = f'val_{i}.JPEG'
        _write_jpg(os.path.join(root, 'val', 'images', name), image)
        lines.append(f'{name}\t{wnids[i % len(wnids)]}\t' + '\t'.join(map(str, box)))
        meta[name] = (i % len(wnids), box)
    with open(os.path.join(root, 'val', 'val_annotations.txt'), 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    return meta


def _write_metadata(folder, ids, labels, sizes, loc, write_empty=False):
    """One split's wsolevaluation metadata files (an empty localization.txt only if asked)."""
    for name, rows in (
        ('image_ids.txt', ids),
        ('class_labels.txt', labels),
        ('image_sizes.txt', sizes),
        ('localization.txt', loc),
    ):
        if rows or write_empty:
            with open(os.path.join(folder, name), 'w') as fh:
                fh.write('\n'.join(rows) + '\n')


def write_wsolevaluation(root, num_classes=3, per_split=6, seed=4, masks_for_test=False, suffix='.jpg'):
    """clovaai/wsolevaluation metadata layout with images under root/images/ (`suffix` .jpg or
    .png). Line i + 1 of every metadata file of a split is image i, except in localization.txt,
    where image 0 has a second box (line 2) when boxes are written. `masks_for_test`: the test
    split lists masks instead, in their OpenImages layout (`path,mask_path,ignore_path`, an
    empty ignore mask per image: their MaskEvaluator reads one for every image)."""
    rng = np.random.default_rng(seed)
    meta = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(root, 'metadata', split)
        os.makedirs(folder, exist_ok=True)
        ids, labels, sizes, loc = [], [], [], []
        for i in range(per_split):
            box = random_box(rng)
            image, mask = make_image(rng, box)
            rel = f'images/{split}/{i:03d}{suffix}'
            _write_image(os.path.join(root, rel), image)
            c = i % num_classes
            ids.append(rel)
            labels.append(f'{rel},{c}')
            sizes.append(f'{rel},{W},{H}')
            if masks_for_test and split == 'test':
                mrel, irel = f'masks/{split}/{i:03d}.png', f'masks/{split}/{i:03d}_ignore.png'
                os.makedirs(os.path.dirname(os.path.join(root, mrel)), exist_ok=True)
                cv2.imwrite(os.path.join(root, mrel), mask)
                cv2.imwrite(os.path.join(root, irel), np.zeros_like(mask))
                loc.append(f'{rel},{mrel},{irel}')
            else:
                loc.append(f'{rel},' + ','.join(map(str, box)))
                if i == 0:  # a second box for the first image
                    loc.append(f'{rel},0,0,20,20')
            meta[rel] = (c, box)
        _write_metadata(folder, ids, labels, sizes, loc, write_empty=True)
    return meta


def write_openimages(root, metadata, num_classes=2, per_split=6, seed=6):
    """clovaai/wsolevaluation's OpenImages layout: images `<split>/<class id>/<id>.jpg` under
    `root`, metadata under `metadata/<split>/`; localization.txt of val and test has one line
    per instance mask, `path,mask_path,ignore_path` (the ignore mask on the first line only, as
    theirs). Returns `{image path: (label, object mask, ignore mask)}` of the test split."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(metadata, split)
        os.makedirs(folder, exist_ok=True)
        ids, labels, sizes, loc = [], [], [], []
        for i in range(per_split):
            c = i % num_classes
            box = random_box(rng)
            image, mask = make_image(rng, box)
            rel = f'{split}/0{c}abcd/{i:04d}.jpg'
            _write_image(os.path.join(root, rel), image)
            ids.append(rel)
            labels.append(f'{rel},{c}')
            sizes.append(f'{rel},{W},{H}')
            if split != 'train':
                # two instance masks (left and right half of the object) and an ignore region
                half = np.zeros_like(mask)
                half[:, : box[0] + (box[2] - box[0]) // 2] = 255
                ignore = np.zeros_like(mask)
                ignore[: H // 4, : W // 4] = 255
                for k, part in enumerate((mask & half, mask & ~half)):
                    mrel = f'{split}/0{c}abcd/{i:04d}_m{k}.png'
                    cv2.imwrite(os.path.join(root, mrel), part)
                    irel = f'{split}/0{c}abcd/{i:04d}_ignore.png'
                    loc.append(f'{rel},{mrel},{irel if k == 0 else ""}')
                cv2.imwrite(os.path.join(root, irel), ignore)
                if split == 'test':
                    out[rel] = (c, mask > 0, (ignore > 0) & (mask == 0))
        _write_metadata(folder, ids, labels, sizes, loc)
    return out


def write_ilsvrc(root, metadata, wnids=('n01440764', 'n01443537', 'n01484850'), per_split=6, seed=7):
    """clovaai/wsolevaluation's ILSVRC layout: ILSVRC2012 training images
    `train/<wnid>/<wnid>_<n>.JPEG` (labels only), ImageNetV2 `val2/<class>/<hash>.jpeg` as the
    validation split, ILSVRC2012 validation images `val/ILSVRC2012_val_<8 digits>.JPEG` as the
    test split; localization.txt has one line per box, and the first image of val and test has
    two objects. Returns `{image path: (label, [boxes])}` of the test split."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(metadata, split)
        os.makedirs(folder, exist_ok=True)
        ids, labels, sizes, loc = [], [], [], []
        for i in range(per_split):
            c = i % len(wnids)
            box = random_box(rng)
            image, _ = make_image(rng, box)
            boxes = [box]
            if split != 'train' and i == 0:  # a second object, bottom right
                second = [250, 170, 310, 230]
                image[170:230, 250:310] = rng.integers(150, 255, 3, dtype=np.uint8)
                boxes.append(second)
            rel = {
                'train': f'train/{wnids[c]}/{wnids[c]}_{1000 + i}.JPEG',
                'val': f'val2/{c}/{rng.integers(16**8):08x}.jpeg',
                'test': f'val/ILSVRC2012_val_{i + 1:08d}.JPEG',
            }[split]
            _write_image(os.path.join(root, rel), image)
            ids.append(rel)
            labels.append(f'{rel},{c}')
            sizes.append(f'{rel},{W},{H}')
            if split != 'train':
                loc += [f'{rel},' + ','.join(map(str, b)) for b in boxes]
            if split == 'test':
                out[rel] = (c, boxes)
        _write_metadata(folder, ids, labels, sizes, loc)
    return out
