"""Stage predict: a trained localiser on new images (`wsol_jax.predict` does the work).

    python main.py --config=configs/synthetic.py:method1 --workdir=runs/demo --stage=predict \
        --config.predict.images=PATH [--config.predict.model=EXPORT_DIR] [--config.predict.out=DIR]
"""

from __future__ import annotations

import os

from wsol_jax import predict as predict_lib, workdir as workdir_lib
from wsol_jax.localizer import load_localizer


def run(config, workdir: str) -> dict:
    """The localiser of `predict.model` (an export) or of the workdir's selected point on
    `predict.images`, written to `predict.out` (default `<workdir>/predictions`); returns
    `wsol_jax.predict.predict`'s summary. A refused write names `--config.predict.out`."""
    cfg = config.predict
    out = cfg.out or os.path.join(workdir, workdir_lib.PREDICTIONS)
    with workdir_lib.writing(out, 'the predictions to', '--config.predict.out'):
        localizer = load_localizer(cfg.model or workdir, batch_size=cfg.batch_size)
        return predict_lib.predict(localizer, cfg.images, out, cfg.save_npy, cfg.batch_size)
