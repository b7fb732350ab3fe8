"""Data: splits cached on disk (ArrayRecord), streamed batches, device-side transforms; one module per source.

`load_dataset(config)` returns train / val / test splits. The validation split (used only for
the S-based epoch selection) is either the dataset's own (`data.val_split='val'`) or a
deterministic hold-out of `data.num_val` training images (`'holdout'`); the test split never
influences training or selection. `check_source(config)` validates the data settings without
reading any file, so that start-up validation can call it first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


from wsol_jax.data.dataset import Dataset, Split, holdout_indices
from wsol_jax.errors import ConfigError, DataError

SOURCES = ('synthetic', 'cub', 'cars', 'flowers', 'tiny_imagenet', 'wsolevaluation', 'tfds')


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f'config.data.{message}')


def check_source(config) -> None:
    """Raise one `ConfigError` naming the key for data settings that cannot work: an unknown
    `data.source` (checked first: the other keys mean something only for a known source), a
    TFDS builder that is not supported, split sizes below 1, an empty `data.root`. Reads no file."""
    cfg = config.data
    _need(cfg.source in SOURCES, f'source: unknown source {cfg.source!r}; choose one of {", ".join(SOURCES)}')
    _need(cfg.on_bad_sample in ('error', 'skip'), f"on_bad_sample must be 'error' or 'skip', got {cfg.on_bad_sample!r}")
    _need(cfg.val_split in ('holdout', 'val'), f"val_split must be 'holdout' or 'val', got {cfg.val_split!r}")
    from wsol_jax.data.records import CODECS

    _need(cfg.cache_codec in CODECS, f"cache_codec must be one of {', '.join(CODECS)}, got {cfg.cache_codec!r}")
    _need(cfg.read_threads >= 0, f'read_threads must be 0 (one per core) or positive, got {cfg.read_threads}')
    _need(cfg.image_size >= 1, f'image_size must be at least 1, got {cfg.image_size}')
    _need(cfg.num_classes >= 0, f'num_classes must be 0 (read from the data) or positive, got {cfg.num_classes}')
    if cfg.source == 'synthetic':
        from wsol_jax.data import synthetic

        synthetic.check_config(cfg)
        return
    if cfg.source == 'tfds':
        from wsol_jax.data.tfds_source import SUPPORTED

        _need(
            cfg.tfds_name in SUPPORTED,
            f'tfds_name must be one of {", ".join(SUPPORTED)} with data.source=tfds, got {cfg.tfds_name!r}',
        )
    if cfg.val_split == 'holdout':
        _need(
            cfg.num_val >= 1,
            f'num_val must be at least 1 with data.val_split=holdout (the training images held '
            f'out to select the epoch), got {cfg.num_val}',
        )
    _need(
        bool(cfg.root),
        f'root is empty: set it to the unpacked {cfg.source} dataset, e.g. --config.data.root=/data/CUB_200_2011',
    )


def check_labels_in_train(records_by_split: dict, splits=('val', 'test')) -> None:
    """`DataError` naming the annotation line of the first example of `splits` whose label never
    occurs in the training records: with classes read from the data it would silently add a
    class that no classifier can predict. Call it before the hold-out (which is part of train)."""
    train = {r.label for r in records_by_split['train']}
    for split in splits:
        for r in records_by_split.get(split) or ():
            if r.label not in train:
                raise DataError(
                    f'{r.label_where}: label {r.label} of {r.path} ({split} split) never occurs in the '
                    'training split; fix the label, or add training images of that class'
                )


def _load_records(cfg, config_seed: int, cache_dir: str) -> tuple[dict[str, Split], int]:
    """Splits of the on-disk formats (`formats.FORMATS`), decoded once into `cache_dir`."""
    from wsol_jax.data import decode, formats

    if cfg.source == 'wsolevaluation':
        records_by_split, num_classes = formats.wsolevaluation(cfg.root, cfg.metadata_dir)
    else:
        records_by_split, num_classes = formats.FORMATS[cfg.source](cfg.root)
    # Only a split the dataset provides: a hold-out val is carved from train below.
    check_labels_in_train(records_by_split, ('test', 'val') if cfg.val_split == 'val' else ('test',))
    num_classes = cfg.num_classes or num_classes
    train, val = records_by_split['train'], records_by_split.get('val')
    if cfg.val_split == 'holdout':
        keep, held = holdout_indices(len(train), cfg.num_val, config_seed)
        train, val = [train[i] for i in keep], [train[i] for i in held]
    elif not val:
        raise ConfigError(
            f"config.data.val_split='val' but {cfg.source} at {cfg.root} has no validation split; use 'holdout'"
        )
    build = lambda name, recs: decode.cached_split(
        cache_dir, f'{cfg.source}-{name}', recs, cfg.image_size, num_classes, cfg.on_bad_sample, cfg.cache_codec
    )
    return {
        'train': build('train', train),
        'val': build('val', val),
        'test': build('test', records_by_split['test']),
    }, num_classes


def _temporary_cache() -> str:
    """A cache folder removed when the process exits (library use without a cache folder)."""
    folder = tempfile.mkdtemp(prefix='wsol_jax_cache_')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def load_dataset(config, cache_dir: str = '') -> Dataset:
    """The dataset named by `config.data.source`. Every split is decoded (or generated) once into
    the record cache (`records.py`) in `config.data.cache_dir`, else `cache_dir`, else a
    temporary folder, and read from there batch by batch."""
    check_source(config)
    cfg = config.data
    cache_dir = cfg.cache_dir or cache_dir or _temporary_cache()
    if cfg.source == 'synthetic':
        from wsol_jax.data import synthetic

        return synthetic.load(cfg, config.seed, cache_dir)
    if not os.path.isdir(cfg.root):
        raise DataError(
            f'config.data.root={cfg.root!r} is not a directory; point it at the unpacked '
            f'{cfg.source} dataset (the README lists what to download)'
        )
    if cfg.source == 'tfds':
        from wsol_jax.data import tfds_source

        splits, num_classes = tfds_source.load(cfg, config.seed, cache_dir)
    else:
        splits, num_classes = _load_records(cfg, config.seed, cache_dir)
    from wsol_jax.data import class_names

    return Dataset(num_classes=num_classes, class_names=class_names.read(cfg.source, cfg.root), **splits)


__all__ = ['Dataset', 'SOURCES', 'Split', 'check_labels_in_train', 'check_source', 'holdout_indices', 'load_dataset']
