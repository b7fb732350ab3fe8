"""Data: cached uint8 splits, device-side transforms, batching; one module per source.

`load_dataset(config)` returns train / val / test splits. The validation split (used only for
the S-based epoch selection) is either the dataset's own (`data.val_split='val'`) or a
deterministic hold-out of `data.num_val` training images (`'holdout'`); the test split never
influences training or selection.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from wsol_jax.data.dataset import Dataset, Split
from wsol_jax.errors import ConfigError, DataError

SOURCES = ('synthetic', 'cub', 'cars', 'flowers', 'tiny_imagenet', 'wsolevaluation', 'tfds')


def holdout_indices(n: int, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic `(train, validation)` indices: `num_val` of `n` training examples held out."""
    if not 0 < num_val < n:
        raise ConfigError(f'config.data.num_val={num_val} must be between 1 and the number of training '
                          f'images - 1 ({n - 1})')
    order = np.asarray(jax.random.permutation(jax.random.key(seed), n))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def load_dataset(config, cache_dir: str = '') -> Dataset:
    """The dataset named by `config.data.source`; decoded splits are cached in `cache_dir`."""
    cfg = config.data
    if cfg.source not in SOURCES:
        raise ConfigError(f'config.data.source: unknown source {cfg.source!r}; choose one of {SOURCES}')
    if cfg.source == 'synthetic':
        from wsol_jax.data import synthetic
        return synthetic.load(cfg, config.seed)
    if not os.path.isdir(cfg.root):
        raise DataError(f'config.data.root={cfg.root!r} is not a directory; point it at the unpacked '
                        f'{cfg.source} dataset (the README lists what to download)')
    cache_dir = cfg.cache_dir or cache_dir
    if cfg.source == 'tfds':
        from wsol_jax.data import tfds_source
        splits, num_classes = tfds_source.load(cfg, config.seed)
    else:
        from wsol_jax.data import decode, formats
        if cfg.source == 'wsolevaluation':
            records_by_split, num_classes = formats.wsolevaluation(cfg.root, cfg.metadata_dir)
        else:
            records_by_split, num_classes = formats.FORMATS[cfg.source](cfg.root)
        num_classes = cfg.num_classes or num_classes
        train, val = records_by_split['train'], records_by_split.get('val')
        if cfg.val_split == 'holdout':
            keep, held = holdout_indices(len(train), cfg.num_val, config.seed)
            train, val = [train[i] for i in keep], [train[i] for i in held]
        elif not val:
            raise ConfigError(f"config.data.val_split='val' but {cfg.source} at {cfg.root} has no validation "
                              "split; use 'holdout'")
        build = lambda name, recs: decode.cached_split(cache_dir, f'{cfg.source}-{name}', recs, cfg.image_size,
                                                       num_classes, cfg.on_bad_sample)
        splits = {'train': build('train', train), 'val': build('val', val),
                  'test': build('test', records_by_split['test'])}
    return Dataset(num_classes=num_classes, **splits)


__all__ = ['Dataset', 'SOURCES', 'Split', 'holdout_indices', 'load_dataset']
