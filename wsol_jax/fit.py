"""`fit_weight_map`: train g for any f, from research code.

    import jax.numpy as jnp, wsol_jax
    from wsol_jax.config import base_config
    from wsol_jax.recipes import from_scratch
    config = from_scratch(base_config('method1'))            # g's recipe; sizes: config.data
    config.f.kind = 'encoder'                                # f_apply returns features, not logits
    localizer = wsol_jax.fit_weight_map(lambda x: my_net.apply(my_vars, x), train_images, val_images, config)
    out = localizer(photos)                                  # boxes, maps, S (and classes when f has logits)

f is a black box (Section 5 of the paper): `f_apply(images)` is any jit-traceable function of a
batch of images (normalised as `wsol_jax.data.dataset.normalize` does, or with
`f_input='pixels'` floats in [0, 255]) that returns logits (`config.f.kind='classifier'`: Eq. 1
with D the cross-entropy) or features (`'encoder'`: D the cosine distance). Its variables are
closed over and frozen. g is trained with the same loop, budget and selection by S as the
`train_g` stage (Method I; Method II when the training images have labels), in `workdir`, from
the untrained map where f still answers (`g.start_agreement`, `wsol_jax.train.start`): an f
from elsewhere may never have seen a dimmed image.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional, Union

import numpy as np

from wsol_jax import checks, config as config_lib, methods, parallel
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.data.dataset import Dataset, Split
from wsol_jax.errors import ConfigError
from wsol_jax.inference import F_INPUTS, f_of_normalized  # noqa: F401  (F_INPUTS: part of this API)
from wsol_jax.selection import select_step
from wsol_jax.stages.train_g import fit_g

Data = Union[Split, np.ndarray, tuple, dict]


def as_split(data: Data, name: str) -> Split:
    """A `Split` from `(N, S, S, 3)` uint8 images, `(images, labels)`, a dict with 'image' and
    optionally 'label' and 'box' (`(N, K, 4)` in pixels, a diagnostic only), or a `Split`."""
    if isinstance(data, Split):
        return data
    if isinstance(data, dict):
        images, labels, boxes = data['image'], data.get('label'), data.get('box')
    elif isinstance(data, tuple):
        (images, labels), boxes = data, None
    else:
        images, labels, boxes = data, None, None
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(
            f'{name} images must be square (N, S, S, 3) uint8, got {images.shape} {images.dtype}; '
            'resize them first (wsol_jax.data.images.resize_image)'
        )
    labels = np.zeros(len(images), np.int32) if labels is None else np.asarray(labels, np.int32)
    return Split(images, labels, None if boxes is None else np.asarray(boxes, np.int32))


def fit_weight_map(
    f_apply: Callable, train: Data, val: Data, config, workdir: Optional[str] = None, f_input: str = 'normalized'
):
    """Train g so that `f_apply` sees the same in `I * g(I)` as in `I`; returns a
    `wsol_jax.localizer.Localizer` at the point the selection by S keeps. `train`/`val`: see
    `as_split` (val needs no boxes: S selects without them). `config`: a wsol-jax config (g's
    recipe, `data.crop_size`, `f.kind`, `method`). Checkpoints go to `workdir` (a new temporary
    folder by default; a rerun with the same one resumes)."""
    from wsol_jax.localizer import Localizer, make_spec

    config_lib.validate_training(config)
    train, val = as_split(train, 'train'), as_split(val, 'val')
    num_classes = int(np.concatenate([train.labels, val.labels]).max(initial=0)) + 1
    data = Dataset(train=train, val=val, test=val, num_classes=num_classes)
    mesh = parallel.make_mesh()
    checks.check_run(config, data, mesh, ('train_g',))  # the stages' own start-up checks
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix='wsol_jax_fit_'))
    os.makedirs(workdir, exist_ok=True)
    ctx = Context(config, workdir, data, mesh)
    history = fit_g(ctx, f_of_normalized(f_apply, f_input), {}, methods.g_target(config).objective)
    step = select_step(history, standard_errors=config.eval.selection_se)
    _, g_state, _ = g_setup(ctx, abstract=True)
    selection = {
        'selected_step': step,
        'selected_epoch': history[step]['epoch'],
        'last_epoch': history[max(history)]['epoch'],
    }
    classify = f_apply if config.f.kind == 'classifier' and config.method == 'method1' else None
    print(
        f'[fit] g kept at step {step} (epoch {history[step]["epoch"]:.2f}, mean S {history[step]["mean_S"]:.4f}); '
        f'checkpoints in {workdir}'
    )
    spec = make_spec(config, [f'class_{k}' for k in range(num_classes)], selection)
    spec['f'] = None  # f is a Python function: it classifies in memory, an export holds g alone
    return Localizer(spec, restore_g(ctx, g_state, step), classify=classify, f_input=f_input)
