"""Faults a user hits end in one clear line, and nothing damaged loads silently: the workdir lock,
Ctrl-C, damaged checkpoints and exports, unwritable folders, a full disk, the report as one unit."""

import asyncio
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from helpers import ROOT, copy_run, tiny_synthetic
from wsol_jax import localizer as localizer_lib, lock as lock_lib, report, run as run_lib, workdir as workdir_lib
from wsol_jax.errors import WorkdirError
from wsol_jax.stages.evaluate import Samples
from wsol_jax.localizer import MANIFEST, VARIABLES, Localizer, load_localizer
from wsol_jax.stages.export import export_localizer
from wsol_jax.selection import load_selection
from wsol_jax.train import checkpoint
from wsol_jax.models.build import build_weight_map_net

INTERRUPTED = (
    'interrupted: the checkpoints saved so far and the earlier reports are kept; run the same command again to resume'
)


def _copy(workdir, dest, *names):
    """A new workdir with some files of a finished run (default: all but the caches)."""
    return copy_run(workdir, dest, *names, ignore=shutil.ignore_patterns('tensorboard', 'xla_cache'))


TRAINED_RUN = ('f_classifier', 'f_quality.json', 'g', 'config.json', 'classes.json', 'selection.json', 'fingerprints')


def _main(workdir, *args):
    # the command line of the `method1_run` fixture (tiny_synthetic is this preset)
    return [
        sys.executable,
        os.path.join(ROOT, 'main.py'),
        '--config=configs/synthetic.py:method1,tiny',
        f'--workdir={workdir}',
        *args,
    ]


def _last_line(stderr: str) -> str:
    """The last line of a stderr that a progress bar (carriage returns) may share."""
    return stderr.strip().split('\n')[-1].split('\r')[-1].strip()


@pytest.fixture(scope='module')
def g_target():
    """The abstract `{'params', 'batch_stats'}` of the fixture's g: what export and predict restore."""
    return localizer_lib._abstract_variables(build_weight_map_net(tiny_synthetic('method1')), 32)


def _restore_g(workdir, g_target):
    epoch = load_selection(workdir)['selected_step']
    return checkpoint.restore_inference_variables(os.path.join(workdir, 'g'), g_target, epoch, 'g')[0]


def jax_leaves(tree):
    """The arrays of `tree` as numpy, in order."""
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture
def quiet_orbax(monkeypatch):
    """`checkpoint.quiet_orbax` (what main.py calls), and what it changes restored afterwards."""
    absl = logging.getLogger('absl')
    filters, levels = list(absl.filters), {n: logging.getLogger(n).level for n in ('orbax', 'asyncio')}
    monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
    yield checkpoint.quiet_orbax
    absl.filters[:] = filters
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# --- the workdir lock and Ctrl-C ------------------------------------------------------------


def test_a_busy_workdir_refuses_a_second_command_and_ctrl_c_is_one_line(method1_run, g_target, tmp_path):
    """Command A trains g further; the same command B on the same workdir stops at once naming A;
    Ctrl-C (SIGINT to A's process group, as a terminal sends it) ends A with one line and exit 130,
    leaving the lock free and the last complete epoch intact."""
    workdir = _copy(method1_run[0], tmp_path / 'w')
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    command = _main(workdir, '--stage=train_g', '--config.g.max_epochs=40')
    a = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for line in a.stdout:  # A holds the lock from its start; wait until it trains
            if line.startswith('[g] resuming at step 9 (epoch 3.00)'):
                break
        holder = json.load(open(os.path.join(workdir, workdir_lib.LOCK)))
        assert holder['pid'] == a.pid and 'main.py' in holder['command'] and '--stage=train_g' in holder['command']
        b = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert b.returncode == 2, b.stderr[-2000:]
        lines = [line for line in b.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f'error: {workdir} is in use by pid {a.pid} on '), b.stderr
        assert 'main.py' in lines[0] and 'use another --workdir' in lines[0]
        assert '[data]' not in b.stdout  # it stopped before loading anything
        assert a.poll() is None, 'A finished before it could be interrupted'
        os.killpg(a.pid, signal.SIGINT)
        out, err = a.communicate(timeout=300)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    assert a.returncode == 130, err[-3000:]
    assert 'Traceback' not in err and _last_line(err) == INTERRUPTED, err[-3000:]

    # The lock went with A, and the last complete epoch, from which the same command resumes,
    # restores intact (its digests are checked).
    with lock_lib.locked(workdir):
        latest = checkpoint.latest_step(os.path.join(workdir, 'g'))
        assert latest >= 3
        checkpoint.restore_inference_variables(os.path.join(workdir, 'g'), g_target, latest, 'g')


def test_the_lock_names_its_holder_is_reentrant_and_goes_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import sys, time\nfrom wsol_jax import lock\n'
            'with lock.locked(sys.argv[1]):\n    print("locked", flush=True)\n    time.sleep(600)',
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(
            WorkdirError,
            match=rf'^{tmp_path} is in use by pid {holder.pid} on \S+ since [\d-]+ [\d:]+ '
            rf'\(\S*python\S* -c {tmp_path}\); wait for it to finish',
        ):
            with lock_lib.locked(str(tmp_path)):
                pass
        # a library call is refused too, before anything is loaded
        with pytest.raises(WorkdirError, match=rf'in use by pid {holder.pid} '):
            run_lib.run(tiny_synthetic('method1'), str(tmp_path), 'train_f')
        assert not os.path.exists(tmp_path / 'data_cache')
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the kernel releases the lock
        holder.wait()
    with lock_lib.locked(str(tmp_path)):
        with lock_lib.locked(str(tmp_path / '.')):  # the same workdir again in this process: no deadlock
            assert json.load(open(tmp_path / workdir_lib.LOCK))['pid'] == os.getpid()
    assert (tmp_path / workdir_lib.LOCK).read_text() == ''  # released: nobody is named any more


# --- damaged checkpoints and exports --------------------------------------------------------


def _state_files(step_dir):
    """The data files of a checkpoint item, largest first."""
    files = [
        os.path.join(d, f)
        for d, _, names in os.walk(os.path.join(step_dir, 'state'))
        for f in names
        if os.sep + 'd' + os.sep in os.path.join(d, f) + os.sep and not f.startswith('_')
    ]
    return sorted(files, key=os.path.getsize, reverse=True)


def _truncate_all(step_dir, keep=64):
    """Cut every data file of the checkpoint to its first `keep` bytes, as an interrupted copy leaves
    them. Every file, not one: Orbax's writer lays arrays out in whatever order its threads finish, so
    half of one file may hold only the optimiser state, which inference never reads (that is no fault)."""
    for file in _state_files(step_dir):
        with open(file, 'r+b') as handle:
            handle.truncate(keep)


def _flip_bits_all(step_dir, every=256):
    """Flip one bit in every `every` bytes of every data file of the checkpoint, at fixed places.
    Every file, as `_truncate_all` cuts them: bits flipped in one file alone may land in arrays
    of the optimiser state only, which inference never reads; spread over each file, they reach
    every array of more than `every` bytes (each kernel of g), whichever file holds it."""
    for file in _state_files(step_dir):
        data = bytearray(open(file, 'rb').read())
        for pos in range(every // 2, len(data), every):
            data[pos] ^= 1 << (pos // every % 8)
        open(file, 'wb').write(bytes(data))


def _randomize_all(step_dir, seed=1):
    """Every data file of the checkpoint replaced by random bytes of its size (every file: see
    `_truncate_all`)."""
    rng = np.random.default_rng(seed)
    for file in _state_files(step_dir):
        data = rng.bytes(os.path.getsize(file))
        open(file, 'wb').write(data)


DAMAGES = {
    'flipped bits in every data file': lambda step: _flip_bits_all(step),
    'truncated data files': lambda step: _truncate_all(step),
    'data files of random bytes': lambda step: _randomize_all(step),
    'a garbage _METADATA': lambda step: open(os.path.join(step, 'state', '_METADATA'), 'wb').write(b'\x8f\x00garbage'),
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_a_damaged_checkpoint_of_g_is_refused_in_one_line(method1_run, g_target, tmp_path, damage, quiet_orbax):
    """The sweep's faults: flipped bits made a tensor NaN and export/predict wrote boxes 0,0,0,0;
    truncated or garbage files gave 80-150-line tracebacks naming a folder."""
    quiet_orbax()  # as main.py: TensorStore's calls into Orbax's closed event loop are not printed
    workdir = _copy(method1_run[0], tmp_path / 'w', *TRAINED_RUN)
    epoch = load_selection(workdir)['selected_step']
    step = os.path.join(workdir, 'g', str(epoch))
    DAMAGES[damage](step)
    with pytest.raises(WorkdirError) as e:
        if damage == 'flipped bits in every data file':
            Localizer.from_workdir(workdir)  # what export and predict load
        else:
            _restore_g(workdir, g_target)
    message = str(e.value)
    assert '\n' not in message and len(message) < 600, message
    assert message.startswith(f'the checkpoint of g {step} ')
    assert (' is damaged: ' in message or ' cannot be read (' in message) and 'train again' in message
    if damage == 'a garbage _METADATA':
        assert 'state/_METADATA is not valid JSON' in message


def _rewrite(step_dir, change_state, digests):
    """Rewrite a checkpoint through Orbax itself, so that it reads back without any error, with
    `change_state(state)` applied and its digests kept ('keep'), made for the new values
    ('recompute') or left out as before digests existed ('drop')."""
    directory, epoch = os.path.dirname(step_dir), int(os.path.basename(step_dir))
    mgr = checkpoint.manager(directory)
    restored = mgr.restore(
        epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
    )
    state, meta = restored['state'], restored['meta']
    change_state(state)
    if digests == 'recompute':
        meta[checkpoint.DIGESTS] = checkpoint.array_digests(state)
    elif digests == 'drop':
        del meta[checkpoint.DIGESTS]
    mgr.delete(epoch)
    mgr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()


def _nudge(state):
    # the variables inference reads: g's moving average of its weights (the recipe keeps one)
    decoder = state['average']['params']['decoder']['bottleneck_conv1']
    decoder['kernel'] = np.asarray(decoder['kernel']) + np.float32(1e-3)


def _nan(state):
    stats = state['average']['batch_stats']['decoder']['bottleneck_bn1']
    stats['var'] = np.asarray(stats['var']).copy()
    stats['var'][0] = np.nan


def test_changed_values_and_nan_are_refused_and_checkpoints_without_digests_still_load(method1_run, g_target, tmp_path):
    workdir = _copy(method1_run[0], tmp_path / 'w', *TRAINED_RUN)
    step = os.path.join(workdir, 'g', str(load_selection(workdir)['selected_step']))
    names = set(json.load(open(os.path.join(step, 'meta', 'metadata')))[checkpoint.DIGESTS])
    assert {'params.decoder.bottleneck_conv1.kernel', 'batch_stats.decoder.bottleneck_bn1.var', 'step'} <= names
    assert {'average.params.decoder.bottleneck_conv1.kernel', 'average.batch_stats.decoder.bottleneck_bn1.var'} <= names
    assert any(n.startswith('opt_state.') for n in names)  # the whole train state, not only the variables
    before = _restore_g(workdir, g_target)

    # Values that read back without an error but are not the saved ones: only the digest tells.
    _rewrite(step, _nudge, 'keep')
    with pytest.raises(
        WorkdirError,
        match=r'is damaged: 1 array\(s\) \(average\.params\.decoder\.bottleneck_conv1\.kernel\) '
        r'no longer match the sha256 recorded when it was saved',
    ):
        _restore_g(workdir, g_target)
    # NaN saved with its own digest (or in a checkpoint from before digests): the finite check.
    for digests in ('recompute', 'drop'):
        _rewrite(step, _nan, digests)
        with pytest.raises(
            WorkdirError,
            match=r'is damaged: 1 array\(s\) \(average\.batch_stats\.decoder\.bottleneck_bn1\.var\) '
            r'hold NaN or inf; delete .*/g and train again',
        ):
            _restore_g(workdir, g_target)
    # A checkpoint from before digests existed, intact: it loads, without a word.
    workdir = _copy(method1_run[0], tmp_path / 'old', *TRAINED_RUN)
    _rewrite(os.path.join(workdir, 'g', os.path.basename(step)), lambda state: None, 'drop')
    after = Localizer.from_workdir(workdir).g_vars
    assert all(np.array_equal(a, b) for a, b in zip(jax_leaves(before), jax_leaves(after)))


def test_evaluate_refuses_a_damaged_f_and_says_which_folders_to_retrain(method1_run, tmp_path, quiet_orbax):
    """The sweep's --stage=evaluate blamed the data (`PxAP needs at least one foreground pixel`)."""
    quiet_orbax()
    workdir = _copy(method1_run[0], tmp_path / 'w')
    kept = json.load(open(os.path.join(workdir, 'f_quality.json')))['f_classifier']['kept_step']
    step = os.path.join(workdir, 'f_classifier', str(kept))
    DAMAGES['truncated data files'](step)
    with pytest.raises(
        WorkdirError,
        match=rf'the checkpoint of f \(f_classifier\) {step} cannot be read \(array '
        rf'[\w.]+ in state[^:]*: .*\); delete {workdir}/f_classifier '
        rf'and {workdir}/g and train again \(--stage=all\) to train f_classifier '
        rf'afresh \(g was trained with it\)',
    ):
        run_lib.run(tiny_synthetic('method1'), workdir, 'evaluate')


@pytest.fixture(scope='module')
def exported(method1_run, tmp_path_factory):
    """`(export folder, the localiser it was written from)`."""
    source = Localizer.from_workdir(method1_run[0])
    return export_localizer(source, str(tmp_path_factory.mktemp('export') / 'export')), source


def _edit_spec(path, change):
    spec = json.load(open(os.path.join(path, MANIFEST)))
    change(spec)
    json.dump(spec, open(os.path.join(path, MANIFEST), 'w'))


@pytest.mark.parametrize(
    'change, differ',
    [
        (lambda s: s['g'].update(width=0.25), 'g.'),  # another width: other shapes
        (lambda s: s['g'].update(depth='resnet50'), 'g.'),  # another depth: other tensors (a 15 KB diff)
        (lambda s: s['f'].update(arch='resnet34'), 'f.'),  # f's architecture (its manifest key): more blocks
        (lambda s: s['f'].update(arch='vit_tiny_test'), 'f.'),  # another kind of network altogether
        (lambda s: s['f'].update(width=0.25), 'f.'),
    ],
)
def test_an_export_whose_manifest_names_other_networks_is_one_short_line(exported, tmp_path, change, differ):
    path = shutil.copytree(exported[0], tmp_path / 'export')
    _edit_spec(path, change)
    with pytest.raises(WorkdirError) as e:
        load_localizer(str(path))
    message = str(e.value)
    assert message.startswith(f'{path}/{MANIFEST} names other networks (g ') and len(message) < 700, message
    assert f'than {path}/{VARIABLES} holds: ' in message and f'({differ}' in message
    assert message.endswith(
        'the two must come from one export: export it again (--stage=export on its training workdir)'
    )


@pytest.mark.parametrize(
    'change, says',
    [
        (lambda s: s['f'].update(depth='resnet34'), 'unknown key(s) f.depth'),  # f is named by arch
        (lambda s: s.update(threshold='0.5'), 'unknown key(s) threshold'),
        (lambda s: s['g'].pop('decoder'), 'no g.decoder'),
        (lambda s: s.pop('box_rule'), 'no box_rule'),
        (lambda s: (s['f'].pop('arch'), s.update(extra=1)), 'unknown key(s) extra and no f.arch'),
    ],
)
def test_a_manifest_with_an_unknown_or_a_missing_key_is_one_line(exported, tmp_path, change, says):
    """A key this version does not write (e.g. a hand edit, `depth` for f) is refused, not
    ignored: loading it silently would give the networks the manifest does not name."""
    path = shutil.copytree(exported[0], tmp_path / 'export')
    _edit_spec(path, change)
    with pytest.raises(WorkdirError) as e:
        load_localizer(str(path))
    assert str(e.value) == (
        f'{path}/{MANIFEST} has {says}: it was not written by this wsol-jax; export it again '
        '(--stage=export on its training workdir)'
    )


def test_a_damaged_export_is_refused_and_one_from_before_digests_loads(exported, tmp_path, quiet_orbax):
    quiet_orbax()
    export, source = exported
    spec = json.load(open(os.path.join(export, MANIFEST)))
    with ocp.StandardCheckpointer() as ckpt:  # every array Orbax saved has its digest
        saved = ckpt.metadata(os.path.join(export, VARIABLES)).item_metadata
    names = {
        '.'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    assert set(spec[checkpoint.DIGESTS]) == names and 'g.params.decoder.up1.conv1.kernel' in names
    path = shutil.copytree(export, tmp_path / 'changed')
    _edit_spec(path, lambda s: s[checkpoint.DIGESTS].update({'g.params.decoder.up1.conv1.kernel': '0' * 64}))
    with pytest.raises(
        WorkdirError,
        match=rf'the export {path}/{VARIABLES} is damaged: 1 array\(s\) '
        r'\(g\.params\.decoder\.up1\.conv1\.kernel\) no longer match',
    ):
        load_localizer(str(path))
    path = shutil.copytree(export, tmp_path / 'truncated')
    data = sorted(
        (
            os.path.join(d, f)
            for d, _, fs in os.walk(os.path.join(path, VARIABLES))
            for f in fs
            if os.sep + 'd' + os.sep in os.path.join(d, f)
        ),
        key=os.path.getsize,
    )[-1]
    open(data, 'r+b').truncate(100)
    with pytest.raises(
        WorkdirError,
        match=rf'the export {path}/{VARIABLES} cannot be read \(array [\w.]+ in '
        rf'{VARIABLES}: .*\); export it again',
    ):
        load_localizer(str(path))
    path = shutil.copytree(export, tmp_path / 'old')
    _edit_spec(path, lambda s: s.pop(checkpoint.DIGESTS))
    old = load_localizer(str(path))
    for net in ('g_vars', 'f_vars'):
        assert all(
            np.array_equal(a, b) for a, b in zip(jax_leaves(getattr(old, net)), jax_leaves(getattr(source, net)))
        )


# --- unwritable folders and a full disk -----------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(folder)` makes `folder` unwritable: chmod 555, and, for root (whom the kernel
    lets write anyway), `os.makedirs` under it refused as the kernel refuses other users."""
    real, folders = os.makedirs, []

    def refuse(name, *args, **kwargs):
        if not os.path.isdir(name) and any(workdir_lib.inside(os.fspath(name), f) for f in folders):
            raise PermissionError(errno.EACCES, 'Permission denied', os.fspath(name))
        return real(name, *args, **kwargs)

    def make(folder):
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o555)
        if os.geteuid() == 0:
            folders.append(str(folder))
            monkeypatch.setattr(os, 'makedirs', refuse)
        return str(folder)

    yield make


def test_unwritable_folders_are_named_in_one_line(method1_run, tmp_path, read_only):
    """A read-only cache folder on a fresh workdir (was: 26 lines ending in PermissionError on a
    .tmp-... folder), and export / predict into folders that cannot be written."""
    cfg = tiny_synthetic('method1')
    cfg.data.cache_dir = read_only(tmp_path / 'cache')
    cfg.export.dir = os.path.join(read_only(tmp_path / 'ro'), 'export')
    cfg.predict.out = os.path.join(tmp_path / 'ro', 'out')
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(images / 'one.png')
    cfg.predict.images = str(images)
    with pytest.raises(
        WorkdirError,
        match=rf'^cannot write the data cache {tmp_path}/cache: Permission denied '
        rf'\({tmp_path}/cache/synthetic-train-\w+\.tmp-[^)]+\); make it writable or '
        r'set --config.data.cache_dir to another folder$',
    ):
        run_lib.run(cfg, str(tmp_path / 'fresh'))
    workdir = _copy(method1_run[0], tmp_path / 'w', *TRAINED_RUN)
    with pytest.raises(
        WorkdirError,
        match=rf'^cannot write the export into {tmp_path}/ro: Permission denied '
        rf'\({tmp_path}/ro/export.tmp\); make it writable or set --config.export.dir '
        r'to another folder$',
    ):
        run_lib.run(cfg, workdir, 'export')
    # the file is named only when it is not the folder itself
    with pytest.raises(
        WorkdirError,
        match=rf'^cannot write the predictions to {tmp_path}/ro/out: Permission denied'
        rf'( \({tmp_path}/ro/out/maps\))?; make it writable or set '
        r'--config.predict.out to another folder$',
    ):
        run_lib.run(cfg, workdir, 'predict')


def test_a_full_disk_while_checkpointing_is_one_line_without_orbax_noise_and_resumes(
    method1_run, tmp_path, monkeypatch, caplog, quiet_orbax
):
    """The disk fills while Orbax writes the checkpoint's metadata in its background thread (was:
    324 lines of Orbax's logged tracebacks above the one clear line)."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    quiet_orbax()
    workdir = _copy(method1_run[0], tmp_path / 'w', 'f_classifier', 'f_quality.json', 'fingerprints')
    real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full(self, x, directory):
        raise OSError(errno.ENOSPC, 'No space left on device', str(directory / 'metadata'))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', full)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        WorkdirError,
        match=rf'^no space left on the device while writing {workdir}/g/3; free some '
        r'space and run the same command again \(it resumes after the last checkpoint\)$',
    ):
        run_lib.run(tiny_synthetic('method1', g_epochs=1), workdir, 'train_g')
    noise = [r for r in caplog.records if f'{os.sep}orbax{os.sep}' in r.pathname or r.name == 'asyncio']
    assert not noise, [r.getMessage()[:200] for r in noise]
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', real)
    run_lib.run(tiny_synthetic('method1', g_epochs=1), workdir, 'train_g')  # the same command again
    assert checkpoint.saved_steps(os.path.join(workdir, 'g')) == [3]


def _writes_into_a_closed_loop(folder) -> int:
    """TensorStore writes awaited from an event loop that is closed after the first one finishes,
    as Orbax's loop is when one of its operations fails; the number left pending."""
    import tensorstore as ts

    array = ts.open(
        {'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': str(folder)}},
        create=True,
        delete_existing=True,
        dtype=ts.float32,
        shape=[2000, 2000],
        chunk_layout=ts.ChunkLayout(chunk_shape=[50, 50]),
    ).result()
    data = np.random.default_rng(0).random((2000, 2000), np.float32)

    async def give_up_after_the_first():
        async def wait(f):
            await f

        tasks = [
            asyncio.ensure_future(wait(array[i * 200 : (i + 1) * 200].write(data[i * 200 : (i + 1) * 200])))
            for i in range(10)
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return sum(not t.done() for t in tasks)

    loop = asyncio.new_event_loop()
    pending = loop.run_until_complete(give_up_after_the_first())
    loop.close()
    time.sleep(2)  # the pending writes finish and call into the closed loop
    return pending


def test_tensorstore_calls_into_a_closed_event_loop_are_silenced(tmp_path, monkeypatch, caplog, quiet_orbax):
    """After a failed Orbax operation TensorStore completes the others, calls into Orbax's closed
    event loop, and Python printed each as a traceback (hundreds of `RuntimeError: Event loop is
    closed` after a garbage manifest). Other unraisable errors still reach the previous hook."""
    seen = []
    monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(str(u.exc_value)))
    if not _writes_into_a_closed_loop(tmp_path / 'a') or 'Event loop is closed' not in seen:
        pytest.skip('every write finished at once: nothing called into the closed loop')
    quiet_orbax()
    seen.clear()
    caplog.clear()
    assert _writes_into_a_closed_loop(tmp_path / 'b')
    assert 'Event loop is closed' not in seen
    assert not [r for r in caplog.records if r.name == 'asyncio']  # "Task was destroyed but it is pending!"
    sys.unraisablehook(
        types.SimpleNamespace(
            exc_type=ValueError, exc_value=ValueError('other'), exc_traceback=None, err_msg=None, object=None
        )
    )
    assert seen == ['other']


# --- the report as one unit -----------------------------------------------------------------


def _report_inputs(workdir):
    """What `report.write` draws, for 2 test images: made up here (only the files matter)."""
    rng = np.random.default_rng(0)
    variants = ('weight_map_selected', 'weight_map_last', 'cam')
    samples = Samples(
        np.arange(2),
        {v: rng.random((2, 32, 32), np.float32) for v in variants},
        {v: np.array([[2, 3, 20, 25]] * 2) for v in variants},
        np.array([[[1, 1, 30, 30]]] * 2),
    )
    images = types.SimpleNamespace(images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    results = json.load(open(os.path.join(workdir, 'results.json')))['results']
    return (
        tiny_synthetic('method1'),
        results,
        load_selection(workdir),
        samples,
        types.SimpleNamespace(test=images, val=images),
        {'total_s': {'evaluate': -1.0}},
    )


def test_a_report_is_replaced_whole_or_not_at_all(method1_run, tmp_path, monkeypatch):
    """The sweep's Ctrl-C during evaluate left results.* half old, half new."""
    workdir = _copy(
        method1_run[0], tmp_path / 'w', 'g', 'strip', 'selection.json', 'f_quality.json', *workdir_lib.REPORTS
    )
    files = [os.path.join(workdir, name) for name in workdir_lib.REPORTS]
    inputs = _report_inputs(workdir)
    old = [(os.stat(f).st_ino, open(f, 'rb').read()) for f in files]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real_strip = report.plot_strip
    monkeypatch.setattr(report, 'plot_strip', interrupted)  # Ctrl-C while the last figure renders
    with pytest.raises(KeyboardInterrupt):
        report.write(workdir, *inputs)
    assert [(os.stat(f).st_ino, open(f, 'rb').read()) for f in files] == old
    assert not [n for n in os.listdir(workdir) if n.startswith('.tmp_')]

    monkeypatch.setattr(report, 'plot_strip', real_strip)
    real_replace, moved = os.replace, []

    def replace_then_interrupt(src, dst):  # a real SIGINT after the first file is in place
        real_replace(src, dst)
        moved.append(dst)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, 'replace', replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write(workdir, *inputs)
    assert sorted(moved) == sorted(files)  # the interrupt waited until every file was in place
    assert all(os.stat(f).st_ino != ino for f, (ino, _) in zip(files, old))
    assert json.load(open(files[0]))['timings_s'] == {'evaluate': -1.0}


def test_a_ctrl_c_that_lands_in_a_garbage_collection_callback_is_not_lost(tmp_path):
    """Python raises the KeyboardInterrupt of a Ctrl-C inside whatever runs, and a
    garbage-collection callback (JAX registers one) only reports it as unraisable: the run went
    on to the end. main.py's hook sends it again."""
    script = (
        'import gc, os, signal, sys, time\n'
        'import main\n'
        'sys.unraisablehook = main.keep_interrupts(sys.unraisablehook)\n'
        'def callback(phase, info):\n'
        '    if phase == "start":\n'
        '        gc.callbacks.remove(callback)\n'
        '        os.kill(os.getpid(), signal.SIGINT)\n'
        '        time.sleep(0.1)   # the handler runs here, inside the callback\n'
        'gc.callbacks.append(callback)\n'
        'try:\n'
        '    gc.collect()\n'
        '    time.sleep(5)\n'
        '    print("lost")\n'
        'except KeyboardInterrupt:\n'
        '    print("kept")\n'
    )
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == 'kept' and 'KeyboardInterrupt' not in proc.stderr, proc.stdout + proc.stderr
