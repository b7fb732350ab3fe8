"""wsol-jax: Learning a Weight Map for Weakly-Supervised Localization (Shaharabany & Wolf) in JAX/Flax.

`wsol_jax.load_localizer(path)` loads a trained localiser (an export folder or a training
workdir); the submodules hold the models, losses, box rule, S, selection and metrics as pure
functions. Imports are lazy: worker processes that only need `wsol_jax.metrics` start fast.
"""


def __getattr__(name):
    if name in ('load_localizer', 'Localizer', 'Prediction'):
        from wsol_jax import localizer
        return getattr(localizer, name)
    raise AttributeError(f'module wsol_jax has no attribute {name!r}')
