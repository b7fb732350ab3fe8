"""Shared test helpers: the tiny synthetic configuration used by end-to-end tests, clovaai/wsolevaluation's
reading of its metadata (written independently of wsol_jax), and the golden maps of tests/golden."""

import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits: one rounding errs by at most 2**-8 relative
# Layers in series whose outputs bf16 rounds (a convolution or dense layer with its normalisation and
# activation is one: XLA fuses them), from the input to the output of each network the tests run:
BF16_LAYERS = {
    'g': 28,  # ResNet-18 encoder (17 convolutions), 5 decoder blocks of 2, the map's conv
    'resnet18': 18,  # 17 convolutions and the head
    'vit_tiny_test': 12,  # patch embedding, 2 blocks of qkv, attention, proj, fc1, fc2, the head
    'convnext_tiny_test': 20,
}  # stem, 5 blocks of depthwise conv, fc1, fc2, 3 downsamplings, the head


def bf16_tolerance(layers: int, confidence: float = 4.0) -> float:
    """Relative tolerance of a bfloat16 computation against float32, from the unit roundoff rather
    than from a measurement: `layers` roundings in series, each a relative error of at most
    u = 2**-8 of either sign, add up to at most `confidence * sqrt(layers) * u` except with
    probability 2 exp(-confidence**2 / 2), 7e-4 at 4 (Higham & Mary 2019, a probabilistic
    rounding error analysis). E.g. 28 layers (g): 0.083."""
    return confidence * math.sqrt(layers) * BF16_UNIT_ROUNDOFF


def load_config(name: str, arg: str):
    """`get_config(arg)` of `configs/<name>.py`, as main.py would load it."""
    spec = importlib.util.spec_from_file_location(f'config_{name}', os.path.join(ROOT, 'configs', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny_synthetic(method: str, g_epochs: int = 3):
    """`configs/synthetic.py:<method>,tiny` (seconds: 32 px, 1/8-width one-block-per-stage ResNets, 48 images),
    with `g_epochs` epochs of g."""
    c = load_config('synthetic', f'{method},tiny')
    c.g.max_epochs = g_epochs
    return c


def read_wsolevaluation_ground_truth(metadata_root: str, mask_root: str = '', split: str = 'test'):
    """The ground truth as clovaai/wsolevaluation's evaluation.py reads it from its metadata, written
    here independently of wsol_jax (its data_loaders.py and evaluation.py, numpy and OpenCV only):
    `(ids, {id: (K, 4) boxes at 224}, {id: (224, 224) mask: 1 object, 255 ignored})`; boxes from
    `<metadata_root>/CUB/<split>`, masks from `<metadata_root>/OpenImages/<split>` and
    `<mask_root>/OpenImages/`, each where it exists."""
    import cv2

    def lines(tree, name):
        with open(os.path.join(metadata_root, tree, split, name)) as fh:
            return [line.strip('\n').split(',') for line in fh]

    boxes, masks, ids = {}, {}, None
    if os.path.isdir(os.path.join(metadata_root, 'CUB', split)):
        ids = [f[0] for f in lines('CUB', 'image_ids.txt')]
        sizes = {p: (int(w), int(h)) for p, w, h in lines('CUB', 'image_sizes.txt')}
        for p, *box in lines('CUB', 'localization.txt'):
            (w, h), (x0, y0, x1, y1) = sizes[p], map(int, box)  # their int(): integer fields only
            boxes.setdefault(p, []).append(
                [int(x0 * 224.0 / w), int(y0 * 224.0 / h), int(x1 * 224.0 / w), int(y1 * 224.0 / h)]
            )
        boxes = {p: np.array(b) for p, b in boxes.items()}
    if os.path.isdir(os.path.join(metadata_root, 'OpenImages', split)):
        ids = ids or [f[0] for f in lines('OpenImages', 'image_ids.txt')]
        read = lambda rel: (
            cv2.resize(
                np.float32(cv2.imread(os.path.join(mask_root, 'OpenImages', rel), cv2.IMREAD_GRAYSCALE)),
                (224, 224),
                interpolation=cv2.INTER_NEAREST,
            )
            > 0.5
        )
        objects, ignores = {}, {}
        for p, mask, ignore in lines('OpenImages', 'localization.txt'):
            objects[p] = objects.get(p, False) | read(mask)
            if p not in ignores:
                ignores[p] = read(ignore)
            else:
                assert ignore == '', 'their loader: the ignore file on the first line of an image only'
        masks = {p: objects[p].astype(np.uint8) + 255 * (ignores[p] & ~objects[p]).astype(np.uint8) for p in objects}
    return ids, boxes, masks


GOLDEN_FACTOR = 7  # 32 px maps -> wsolevaluation's 224


def _upsampling_weights(n: int, factor: int) -> np.ndarray:
    """`(n * factor, n)` integer weights (rows sum to `2 * factor`) of bilinear interpolation with
    half-pixel centres and clamped edges (OpenCV's INTER_LINEAR); `factor` odd, so that every
    source pixel's centre is one output pixel, copied exactly."""
    w = np.zeros((n * factor, n), np.int64)
    for i in range(n * factor):
        q, j = divmod(i, factor)
        offset = 2 * j + 1 - factor  # source position - q, in units of 1 / (2 * factor)
        low = q - 1 if offset < 0 else q
        upper = offset + 2 * factor if offset < 0 else offset
        w[i, min(max(low, 0), n - 1)] += 2 * factor - upper
        w[i, min(max(low + 1, 0), n - 1)] += upper
    return w


def golden_maps(maps_uint8) -> np.ndarray:
    """The golden scoremaps (tests/golden, benchmarks/wsoleval_golden.py): `(N, 32, 32)` uint8 maps
    upsampled x7 by exact integer bilinear interpolation to `(N, 224, 224)` float32 in [0, 1]
    (`value / (255 * 14 ** 2)`, correctly rounded): the values clovaai/wsolevaluation's evaluator
    read, reproduced bit for bit without OpenCV."""
    k = np.asarray(maps_uint8, np.int64)
    w = _upsampling_weights(k.shape[-1], GOLDEN_FACTOR)
    full = np.einsum('ia,nab,jb->nij', w, k, w)
    return full.astype(np.float32) / np.float32(255 * (2 * GOLDEN_FACTOR) ** 2)


def save_state_dict(state_dict, path: str) -> str:
    """A PyTorch `state_dict` written as `path` (.pth or .safetensors); returns `path`."""
    import torch

    if path.endswith('.pth'):
        torch.save(state_dict, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return path


def copy_run(workdir, dest, *names, ignore=None):
    """A new workdir holding some stages of a finished run (default: all of it but what `ignore`,
    a `shutil.copytree` ignore function, leaves out)."""
    if not names:
        shutil.copytree(workdir, dest, ignore=ignore)
        return str(dest)
    os.makedirs(dest)
    for name in names:
        src = os.path.join(workdir, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(dest, name))
    return str(dest)


def cli(*args):
    """main.py with `args`, run from the repository root: its CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
