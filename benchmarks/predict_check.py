"""Export a finished run, predict on its test images written as JPEGs of varied sizes, and compare
the boxes (mapped back to the cached image) with the evaluation's boxes on the same images.

    python benchmarks/predict_check.py --workdir=runs/demo --config=configs/synthetic.py:method1 [--n=128]

Writes `<workdir>/predict_check/{images,export,out}`; prints, for the predicted boxes mapped back
to the cached image's pixels, the share with IoU >= 0.5 / >= 0.9 and the mean IoU against (1) the
evaluation's box rule on exactly the input the network saw (the geometry of the mapping) and
(2) the evaluation's box on the cached original (what resampling a 64 px image up and down
through a JPEG changes). The configs whose crop equals the image size (synthetic, custom small)
see the same whole image in predict and in the evaluation.
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
from wsol_jax.data.decode import read_image  # noqa: E402
from wsol_jax.localizer import Localizer, load_localizer  # noqa: E402
from wsol_jax.predict import predict  # noqa: E402
from wsol_jax.stages.export import export_localizer  # noqa: E402


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
    for i in range(n):
        w, h = (int(v) for v in rng.integers(48, 400, 2))
        name = f'{i:04d}.jpg'
        Image.fromarray(test.images[i]).resize((w, h), Image.BILINEAR).save(os.path.join(images_dir, name), quality=92)
    export = export_localizer(Localizer.from_workdir(args.workdir), os.path.join(base, 'export'))
    localizer = load_localizer(export)
    summary = predict(localizer, images_dir, os.path.join(base, 'out'))
    rows = {
        os.path.basename(json.loads(line)['path']): json.loads(line)
        for line in open(os.path.join(base, 'out', 'predictions.jsonl'))
    }
    size = test.size
    rows = [rows[f'{i:04d}.jpg'] for i in range(n)]
    mapped = np.round(
        [
            [
                r['box'][0] * size / r['width'],
                r['box'][1] * size / r['height'],
                r['box'][2] * size / r['width'],
                r['box'][3] * size / r['height'],
            ]
            for r in rows
        ]
    )
    # 1. geometry: the evaluation's box rule on exactly what the network saw (the JPEG, resized to
    #    the input) against predict's box mapped back from the image's own pixels
    seen, _ = localizer.preprocess([read_image(r['path']) for r in rows])
    on_seen = localizer(seen, own_resolution=False).boxes
    # 2. the same object through a JPEG round trip at another size: the cached image itself
    on_cached = localizer(test.images[:n]).boxes
    # boxes are [x0, y0, x1, y1) with exclusive ends; box_iou counts +1 pixel: compare inclusive ends
    inclusive = lambda b: np.asarray(b) - [0, 0, 1, 1]
    for what, ref in (
        ('the evaluation box on the image the network saw', on_seen),
        ('the evaluation box on the cached original', on_cached),
    ):
        iou = metrics.box_iou(inclusive(mapped), inclusive(ref))
        print(
            f'[predict_check] {n} JPEGs of 48-399 px, predicted box mapped back vs {what}: IoU >= 0.5 for '
            f'{100 * np.mean(iou >= 0.5):.1f}%, >= 0.9 for {100 * np.mean(iou >= 0.9):.1f}%, mean IoU {iou.mean():.3f}'
        )
    print(f'[predict_check] overlays in {os.path.join(base, "out", "overlays")}; {summary["written"]} written')


if __name__ == '__main__':
    main()
