"""Stage export (wsol_jax/stages/export.py): an export loads without the workdir, holds no optimiser state and
gives the localiser's outputs."""

import json
import os
import shutil

import numpy as np

from wsol_jax.localizer import load_localizer
from wsol_jax.stages.export import export_localizer


def test_export_loads_without_the_workdir_and_gives_the_same_outputs(method1_run, localizer, test_split, tmp_path):
    path = export_localizer(localizer, str(tmp_path / 'export'))
    moved = shutil.move(path, str(tmp_path / 'elsewhere'))
    spec = json.load(open(os.path.join(moved, 'localizer.json')))
    assert spec['box_rule'] == 'normalized' and spec['input_size'] == 32
    assert spec['class_names'] == ['genus0-disc', 'genus0-triangle', 'genus1-disc', 'genus1-triangle']
    loaded = load_localizer(moved)
    a, b = localizer(test_split.images[:5]), loaded(test_split.images[:5])
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(np.stack(a.maps), np.stack(b.maps), atol=1e-6)
    # only the networks' variables: nothing of an optimiser
    assert set(loaded.g_vars) == {'params', 'batch_stats'} and set(loaded.f_vars) == {'params', 'batch_stats'}
