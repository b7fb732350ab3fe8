"""wsol-jax: Learning a Weight Map for Weakly-Supervised Localization (Shaharabany & Wolf) in JAX/Flax.

`wsol_jax.load_localizer(path)` loads a trained localiser (an export folder or a training
workdir), `wsol_jax.export_localizer(localizer, path)` writes one as an export folder;
`wsol_jax.fit_weight_map(f_apply, train, val, config)` trains g for any f; the submodules hold
the models, losses, box rule, S, selection and metrics as pure functions. Imports are lazy:
worker processes that only need `wsol_jax.metrics` start fast.
"""


def __getattr__(name):
    if name in ('load_localizer', 'Localizer', 'Prediction'):
        from wsol_jax import localizer

        return getattr(localizer, name)
    if name == 'export_localizer':
        from wsol_jax.stages.export import export_localizer

        return export_localizer
    if name == 'fit_weight_map':
        from wsol_jax.fit import fit_weight_map

        return fit_weight_map
    raise AttributeError(f'module wsol_jax has no attribute {name!r}')
