"""The names of the classes, where a dataset ships them: for predictions and exports only (a
missing or odd names file is never an error; classes are then `class_<k>`)."""

from __future__ import annotations

import os
from typing import Optional

from wsol_jax.data.formats import _lines


def read(source: str, root: str) -> Optional[list[str]]:
    """The names of the classes in label order where the dataset ships them (CUB's
    classes.txt, Tiny-ImageNet's wnids.txt with words.txt), else None."""
    if source == 'cub' and os.path.isfile(os.path.join(root, 'classes.txt')):
        rows = [f for _, f in _lines(os.path.join(root, 'classes.txt'), 'cub')]
        if not all(len(f) >= 2 and f[0].isdigit() for f in rows):
            return None  # names are for reading predictions only: an odd file is not an error
        return [f[1].split('.', 1)[-1] for f in sorted(rows, key=lambda f: int(f[0]))]
    if source == 'tiny_imagenet' and os.path.isfile(os.path.join(root, 'wnids.txt')):
        wnids = [f[0] for _, f in _lines(os.path.join(root, 'wnids.txt'), 'tiny_imagenet')]
        words = {}
        if os.path.isfile(os.path.join(root, 'words.txt')):
            with open(os.path.join(root, 'words.txt')) as fh:
                words = dict(line.rstrip('\n').split('\t', 1) for line in fh if '\t' in line)
        return [words.get(w, w).split(',')[0] for w in wnids]
    return None
