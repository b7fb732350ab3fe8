"""Export a finished run, predict on its test images written as JPEGs of varied sizes, and compare
the boxes (mapped back to the cached image) with the evaluation's boxes on the same images.

    python benchmarks/predict_check.py --workdir=runs/demo --config=configs/synthetic.py:method1 [--n=128]

Writes `<workdir>/predict_check/{images,export,out}`; prints the share of images whose predicted
box, mapped back, has IoU >= 0.5 / >= 0.9 with the evaluation's box, and the mean IoU. The
evaluation's boxes are those of the selected epoch on the cached test images; the configs whose
crop equals the image size (synthetic, custom small) see the same whole image in both.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wsol_jax import metrics  # noqa: E402
from wsol_jax.data import load_dataset  # noqa: E402
from wsol_jax.localizer import Localizer, load_localizer  # noqa: E402
from wsol_jax.predict import predict  # noqa: E402


def load_config(spec: str):
    path, _, arg = spec.partition(':')
    module_spec = importlib.util.spec_from_file_location('cfg', os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or 'method1')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--config', default='configs/synthetic.py:method1')
    parser.add_argument('--n', type=int, default=128)
    args = parser.parse_args()
    record = json.load(open(os.path.join(args.workdir, 'results.json')))
    config = load_config(args.config)
    config.seed = record['seed']
    test = load_dataset(config).test
    n = min(args.n, len(test))
    base = os.path.join(args.workdir, 'predict_check')
    images_dir = os.path.join(base, 'images')
    os.makedirs(images_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {}
    for i in range(n):
        w, h = (int(v) for v in rng.integers(48, 400, 2))
        name = f'{i:04d}.jpg'
        Image.fromarray(test.images[i]).resize((w, h), Image.BILINEAR).save(os.path.join(images_dir, name), quality=92)
        sizes[name] = (w, h)
    export = Localizer.from_workdir(args.workdir).export(os.path.join(base, 'export'))
    localizer = load_localizer(export)
    summary = predict(localizer, images_dir, os.path.join(base, 'out'))
    rows = {os.path.basename(json.loads(line)['path']): json.loads(line)
            for line in open(os.path.join(base, 'out', 'predictions.jsonl'))}
    evaluation = localizer(test.images[:n]).boxes           # the evaluation's view: the cached image
    size = test.size
    mapped = np.array([[row['box'][0] * size / row['width'], row['box'][1] * size / row['height'],
                        row['box'][2] * size / row['width'], row['box'][3] * size / row['height']]
                       for row in (rows[f'{i:04d}.jpg'] for i in range(n))])
    # boxes are [x0, y0, x1, y1) with exclusive ends; box_iou counts +1 pixel, so compare inclusive ends
    iou = metrics.box_iou(np.round(mapped) - [0, 0, 1, 1], evaluation - [0, 0, 1, 1])
    print(f'[predict_check] {summary["written"]} JPEGs of sizes 48-399 px: predicted box vs evaluation box '
          f'(cached {size}px image): IoU >= 0.5 for {100 * np.mean(iou >= 0.5):.1f}%, >= 0.9 for '
          f'{100 * np.mean(iou >= 0.9):.1f}%, mean IoU {iou.mean():.3f}; overlays in {os.path.join(base, "out", "overlays")}')


if __name__ == '__main__':
    main()
