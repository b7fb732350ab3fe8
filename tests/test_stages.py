"""The table of stages (wsol_jax/stages/__init__.py): the dispatcher, main.py's `--stage` flag and
the README's table of stages all come from it, and it names what each stage reads and writes."""

import importlib
import importlib.util
import os

import pytest

from helpers import ROOT, tiny_synthetic
from wsol_jax import run as run_lib, stages, workdir


def test_all_runs_the_stages_that_need_the_data_in_order_and_each_has_its_module():
    assert [s.name for s in stages.ALL] == ['train_f', 'train_g', 'select', 'evaluate']
    assert stages.NAMES == ('train_f', 'train_g', 'select', 'evaluate', 'export', 'predict')
    for stage in stages.STAGES:
        module = importlib.import_module(f'wsol_jax.stages.{stage.name}')
        assert stage.function() is module.run
        assert (stage.report_function() is module.report) if stage.reports else not hasattr(module, 'report')


def test_what_the_stages_read_and_write_are_workdir_names():
    names = {v for k, v in vars(workdir).items() if k.isupper() and isinstance(v, str)}
    names |= set(workdir.REPORTS) | {workdir.history_name(s) for s in workdir.TRAINED}
    for stage in stages.STAGES:
        assert set(stage.reads) | set(stage.writes) <= names, stage.name
    # each stage reads what an earlier one wrote
    written = set()
    for stage in stages.ALL:
        assert set(stage.reads) <= written, stage.name
        written |= set(stage.writes)


def test_the_readme_table_of_stages_is_the_table():
    readme = open(os.path.join(ROOT, 'README.md')).read()
    assert stages.markdown_table() in readme


def test_main_builds_its_stage_flag_from_the_table():
    spec = importlib.util.spec_from_file_location('wsol_jax_main', os.path.join(ROOT, 'main.py'))
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    flag = main.FLAGS['stage']
    assert flag.parser.enum_values == ['all', *stages.NAMES]
    assert flag.help.endswith(stages.flag_help()) and 'export and predict use a trained run' in flag.help


def test_an_unknown_stage_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown stage 'train_h'; choose all or one of \('train_f', "):
        run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'train_h')
    assert not os.listdir(tmp_path)
