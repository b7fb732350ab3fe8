"""Stage export: the localiser of a finished run as a folder that loads without the workdir.

    python main.py --config=configs/synthetic.py:method1 --workdir=runs/demo --stage=export

The folder (`<workdir>/export/`, or `export.dir`) holds `localizer.json` (the localiser's spec,
`wsol_jax.localizer.make_spec`, with the sha256 of every array) and `variables/` (an Orbax
checkpoint of g at the selected point and of the classifier f, nothing of the optimiser).
`wsol_jax.load_localizer` reads it back and checks it; `export_localizer` writes any localiser,
one that `fit_weight_map` returned included.
"""

from __future__ import annotations

import os
import shutil

import orbax.checkpoint as ocp

from wsol_jax import workdir as workdir_lib
from wsol_jax.localizer import MANIFEST, VARIABLES, Localizer
from wsol_jax.train import checkpoint


def run(config, workdir: str) -> dict:
    """The workdir's localiser (`Localizer.from_workdir`) written to `export.dir` (default
    `<workdir>/export`); returns `{'export': its path}`."""
    out = export_localizer(
        Localizer.from_workdir(workdir), config.export.dir or os.path.join(workdir, workdir_lib.EXPORT)
    )
    print(
        f'[export] {out}: load it with wsol_jax.load_localizer({out!r}) or --stage=predict --config.predict.model={out}'
    )
    return {'export': out}


def export_localizer(localizer: Localizer, directory: str) -> str:
    """Write `localizer` to `directory` (replaced atomically if it exists), with the sha256 of
    every array in `localizer.json` (`load_localizer` checks them); returns the absolute path."""
    directory = os.path.abspath(directory)
    tmp = directory + '.tmp'
    with workdir_lib.writing(os.path.dirname(directory), 'the export into', '--config.export.dir'):
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            variables = {'g': localizer.g_vars, **({} if localizer.f_vars is None else {'f': localizer.f_vars})}
            with ocp.StandardCheckpointer() as ckpt:
                ckpt.save(os.path.join(tmp, VARIABLES), variables)
            workdir_lib.write_json(
                os.path.join(tmp, MANIFEST), {**localizer.spec, checkpoint.DIGESTS: checkpoint.array_digests(variables)}
            )
        except ValueError as e:  # TensorStore reports a full disk or a refused write as ValueError
            code = workdir_lib.write_errno(e)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), tmp) from None
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    return directory
