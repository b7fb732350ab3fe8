"""Writes tests/golden/: maps of two small wsol-jax runs, their ground truth, and the numbers that
clovaai/wsolevaluation's own evaluation.py gives on them (`tests/test_wsolevaluation.py` holds
wsol-jax's metrics to those numbers).

    python benchmarks/wsoleval_golden.py --wsolevaluation=/path/to/wsolevaluation [--out=tests/golden]
    python benchmarks/wsoleval_golden.py --dry_run      # print the wsol-jax commands, run nothing

`--wsolevaluation` is a checkout of clovaai/wsolevaluation (its evaluation.py, data_loaders.py,
util.py and config.py are what runs, unmodified). Their code needs numpy < 1.24 (it uses
`np.float`), torch (DataLoader), torchvision and munch (imports); where those are missing, run with
`--shim=DIR`, a folder put first on their PYTHONPATH that provides them (e.g. a `sitecustomize.py`
with `np.float = float`, a `munch.py` with a dict subclass `Munch`, a `torchvision` package; their
evaluation never uses torchvision).

Two runs, each through every stage with `--config.eval.save_maps=True` (tiny networks at 32 px
on the CPU, a few minutes each):
  synthetic     configs/synthetic.py:method1, 32 test images (boxes and masks, no files of its
                own: the metadata and masks are the ones wsol-jax writes)
  openimages    configs/openimages.py:method1 on tests/fixtures.write_openimages (32 test images
                of 320x240, two instance masks per image and an ignore region, wsolevaluation's
                OpenImages layout), boxes from the masks' rectangles
A run's scoremap is g's 32 px map resized x7 by OpenCV (bilinear, half-pixel centres) and min-max
normalised, so every 7th pixel from the 4th holds the normalised 32 px map exactly. That map is
quantised to uint8 and upsampled x7 again by exact integer bilinear interpolation
(`tests/helpers.golden_maps`, within 1/510 of the run's scoremap): the golden file stores the
32 x 32 uint8 maps (1 KB each, where 224 x 224 float maps would be 200 KB), and their evaluator
reads exactly those 224 x 224 float32 values, with the metadata and masks the run wrote:
MaxBoxAcc (`--multi_contour_eval=False --multi_iou_eval=False`), MaxBoxAccV2 (`True True`, IoU
30/50/70) and PxAP (`--dataset_name=OpenImages`). For the OpenImages fixture PxAP is also computed
from the fixture's own metadata and mask files, which must give the same number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

TINY = [
    '--config.f.width=0.125',
    '--config.f.batch_size=8',
    '--config.f.allow_weak=True',
    '--config.g.width=0.125',
    '--config.g.batch_size=8',
    '--config.eval.batch_size=8',
    '--config.eval.max_coverage=1.0',
    '--config.eval.max_bad_maps=1.0',
    '--config.eval.num_overlays=2',
    '--config.eval.strip_images=2',
    '--config.eval.save_maps=True',
    '--config.data.image_size=32',
    '--config.data.crop_size=32',
]
RUNS = {
    'synthetic': [
        '--config=configs/synthetic.py:method1',
        '--config.data.num_train=96',
        '--config.data.num_val=16',
        '--config.data.num_test=32',
        '--config.data.num_classes=4',
        '--config.f.embed_dim=8',
    ],
    'openimages': [
        '--config=configs/openimages.py:method1',
        '--config.data.num_classes=2',
        '--config.f.arch=resnet18',
        '--config.g.depth=resnet18',
        '--config.f.pretrained=none',
        '--config.g.pretrained=none',
        # rates at which tiny networks trained from scratch move in a few dozen steps
        '--config.f.optimizer.name=adam',
        '--config.g.optimizer.learning_rate=0.03',
    ],
}
EPOCHS = {
    'synthetic': ['--config.f.max_epochs=3', '--config.g.max_epochs=3'],
    'openimages': ['--config.f.max_epochs=8', '--config.g.max_epochs=6'],
}
COMMANDS = {  # their evaluation.py flags per metric (wsol_jax.wsolevaluation.evaluator_commands)
    'maxboxacc_v1': ['--dataset_name=CUB', '--multi_contour_eval=False', '--multi_iou_eval=False'],
    'maxboxacc_v2': [
        '--dataset_name=CUB',
        '--multi_contour_eval=True',
        '--multi_iou_eval=True',
        '--iou_threshold_list',
        '30',
        '50',
        '70',
    ],
    'pxap': ['--dataset_name=OpenImages'],
}


def wsol_jax_command(name: str, workdir: str, data_args: list[str]) -> list[str]:
    """The command line of one run through every stage with save_maps."""
    return [sys.executable, 'main.py', *RUNS[name], *data_args, *TINY, *EPOCHS[name], f'--workdir={workdir}']


def data_args(name: str, scratch: str) -> list[str]:
    """The data flags of a set: the OpenImages fixture is written under `<scratch>/data`."""
    if name != 'openimages':
        return []
    root, metadata = os.path.join(scratch, 'data', 'OpenImages'), os.path.join(scratch, 'data', 'metadata')
    return [f'--config.data.root={root}', f'--config.data.metadata_dir={metadata}/OpenImages']


def run_wsol_jax(name: str, workdir: str, data_args: list[str]) -> list[str]:
    """One run through every stage with save_maps; returns its command line."""
    cmd = wsol_jax_command(name, workdir, data_args)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return cmd


def their_number(checkout: str, shim: str, flags: list[str]) -> tuple[float, list[str]]:
    """Their evaluation.py with `flags`: the number it prints last (`localization: X`, Python's repr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (shim, checkout) if p))
    cmd = [sys.executable, 'evaluation.py', *flags]
    out = subprocess.run(cmd, cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout
    found = re.findall(r'^localization: (\S+)$', out, re.M)
    if not found:
        raise RuntimeError(f'no "localization:" line in the output of {" ".join(cmd)}:\n{out}')
    return float(found[-1]), ['python', 'evaluation.py', *flags]


def quantized_scoremaps(scoremaps: str, ids: list[str], dest: str) -> np.ndarray:
    """The run's 32 px maps as uint8 `(N, 32, 32)` (see above); `dest` gets their exact x7
    upsampling `golden_maps` as float32 .npy files under the same ids (attaining 0 and 1)."""
    from helpers import GOLDEN_FACTOR, golden_maps
    from wsol_jax import wsolevaluation

    full = np.stack([np.load(wsolevaluation.scoremap_path(scoremaps, i)) for i in ids])
    c = GOLDEN_FACTOR // 2
    k = np.rint(full[:, c::GOLDEN_FACTOR, c::GOLDEN_FACTOR] * 255).astype(np.uint8)
    assert (k.min(axis=(1, 2)) == 0).all() and (k.max(axis=(1, 2)) == 255).all()
    maps = golden_maps(k)
    assert np.abs(maps - full).max() <= 1 / 510 + 1e-6, 'the scoremaps are not a x7 bilinear upsampling'
    wsolevaluation.write_scoremaps(dest, ids, maps)
    return k


def golden_set(
    name: str, workdir: str, checkout: str, shim: str, scratch: str, own_metadata: str = '', own_mask_root: str = ''
) -> tuple[dict, dict]:
    """`(arrays for the .npz, record for the .json)` of one run."""
    from helpers import load_config
    from wsol_jax import workdir as workdir_lib
    from wsol_jax.data import load_dataset

    config = json.load(open(os.path.join(workdir, workdir_lib.CONFIG)))
    cfg = load_config('synthetic' if name == 'synthetic' else 'openimages', 'method1')
    cfg.data.update(config['data'])
    test = load_dataset(cfg, cache_dir=os.path.join(workdir, 'data_cache')).test
    ids = list(test.names)
    scoremaps = os.path.join(scratch, name, 'scoremaps')
    k = quantized_scoremaps(os.path.join(workdir, workdir_lib.SCOREMAPS), ids, scoremaps)
    metadata, masks = (
        os.path.join(workdir, workdir_lib.WSOLEVAL_METADATA),
        os.path.join(workdir, workdir_lib.WSOLEVAL_MASKS),
    )
    common = [
        f'--scoremap_root={scoremaps}/',
        f'--metadata_root={metadata}/',
        f'--mask_root={masks}/',
        '--split=test',
        '--cam_curve_interval=0.01',
    ]
    numbers, commands = {}, {}
    for metric, flags in COMMANDS.items():
        numbers[metric], commands[metric] = their_number(checkout, shim, common + flags)
    if own_metadata:  # the dataset's own files, as the field evaluates them
        own = [
            common[0],
            f'--metadata_root={own_metadata}/',
            f'--mask_root={own_mask_root}/',
            '--split=test',
            '--cam_curve_interval=0.01',
            *COMMANDS['pxap'],
        ]
        numbers['pxap_from_the_dataset_files'], commands['pxap_from_the_dataset_files'] = their_number(
            checkout, shim, own
        )
        if numbers['pxap_from_the_dataset_files'] != numbers['pxap']:
            raise RuntimeError(
                f'{name}: PxAP from the dataset\'s own files {numbers["pxap_from_the_dataset_files"]} '
                f'!= from the written masks {numbers["pxap"]}'
            )
    arrays = {
        'ids': np.asarray(ids),
        'maps_uint8': k,
        'boxes': np.asarray(test.boxes, np.float64),
        'sizes': np.asarray(test.original_sizes, np.int32),
        'labels': np.asarray(test.labels, np.int32),
        'masks': np.stack(test.mask_rows(np.arange(len(test)))),
    }
    return arrays, {'their_numbers': numbers, 'their_commands': commands}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--wsolevaluation', default='', help='a checkout of clovaai/wsolevaluation')
    p.add_argument('--shim', default='', help='a folder put first on their PYTHONPATH (see above)')
    p.add_argument('--out', default=os.path.join(ROOT, 'tests', 'golden'))
    p.add_argument('--workdir', default='', help='where the two runs go (default: a temporary folder)')
    p.add_argument('--commit', default='', help='the commit of the checkout (default: git rev-parse HEAD in it)')
    p.add_argument('--sets', default=','.join(RUNS), help='which sets to (re)make; the others stay as they are in OUT')
    p.add_argument(
        '--dry_run', action='store_true', help='print the wsol-jax commands (as the .json records them) and stop'
    )
    a = p.parse_args(argv)
    if a.dry_run:
        for name in a.sets.split(','):
            command = wsol_jax_command(name, f'<scratch>/{name}/run', data_args(name, '<scratch>'))
            print(f'{name}: ' + ' '.join(['python', *command[1:]]))
        return
    if not a.wsolevaluation:
        sys.exit('wsoleval_golden.py: pass --wsolevaluation=<a checkout of clovaai/wsolevaluation> (or --dry_run)')
    checkout = os.path.abspath(a.wsolevaluation)
    if not os.path.isfile(os.path.join(checkout, 'evaluation.py')):
        sys.exit(f'wsoleval_golden.py: no evaluation.py in {checkout}; pass a checkout of clovaai/wsolevaluation')
    scratch = a.workdir or tempfile.mkdtemp(prefix='wsoleval_golden_')
    os.makedirs(a.out, exist_ok=True)
    import fixtures

    json_path = os.path.join(a.out, 'wsolevaluation.json')
    records = json.load(open(json_path))['sets'] if os.path.exists(json_path) else {}
    for name in a.sets.split(','):
        workdir, own = os.path.join(scratch, name, 'run'), {}
        if name == 'openimages':
            root, metadata = os.path.join(scratch, 'data', 'OpenImages'), os.path.join(scratch, 'data', 'metadata')
            shutil.rmtree(os.path.join(scratch, 'data'), ignore_errors=True)
            fixtures.write_openimages(root, os.path.join(metadata, 'OpenImages'), per_split=32)
            own = {'own_metadata': metadata, 'own_mask_root': os.path.dirname(root)}
        command = run_wsol_jax(name, workdir, data_args(name, scratch))
        arrays, record = golden_set(name, workdir, checkout, a.shim, scratch, **own)
        np.savez_compressed(os.path.join(a.out, f'{name}.npz'), **arrays)
        record['their_commands'] = {
            k: ' '.join(c).replace(scratch, '<scratch>') for k, c in record['their_commands'].items()
        }
        records[name] = {
            **record,
            'wsol_jax_command': ' '.join(['python', *command[1:]]).replace(scratch, '<scratch>'),
            'images': len(arrays['ids']),
        }
        print(f'[golden] {name}: {record["their_numbers"]}')
    commit = (
        a.commit
        or subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=checkout, capture_output=True, text=True).stdout.strip()
    )
    import cv2
    import torch

    meta = {
        'wsolevaluation_commit': commit or 'unknown (not a git checkout)',
        'python': platform.python_version(),
        'numpy': np.__version__,
        'opencv': cv2.__version__,
        'torch': torch.__version__,
        'maps': 'tests/helpers.golden_maps(maps_uint8): the float32 (224, 224) values their evaluator read',
        'sets': records,
    }
    with open(json_path, 'w') as fh:
        json.dump(meta, fh, indent=1)
        fh.write('\n')
    print(f'[golden] wrote {a.out}')


if __name__ == '__main__':
    main()
