"""Data: cached uint8 splits, device-side transforms, batching; one module per source."""
from wsol_jax.data.dataset import Dataset, Split
from wsol_jax.errors import ConfigError


def load_dataset(config) -> Dataset:
    """The dataset named by `config.data.source`."""
    source = config.data.source
    if source == 'synthetic':
        from wsol_jax.data import synthetic
        return synthetic.load(config.data, config.seed)
    raise ConfigError(f"config.data.source: unknown source {source!r}; available: 'synthetic'")


__all__ = ['Dataset', 'Split', 'load_dataset']
