"""A trained localiser for new images: `g` at the selected step, the classifier `f`, the box rule.

    import wsol_jax
    localizer = wsol_jax.load_localizer('runs/demo/export')      # or Localizer.from_workdir('runs/demo')
    out = localizer(images)        # (N, H, W, 3) uint8, or a list of images of any size
    out.boxes[0], localizer.class_name(out.classes[0]), out.probabilities[0], out.maps[0].shape

Each image is seen whole (no centre crop: the object may lie at the border), resized to the
network's input size with the data pipeline's own resize, run through one compiled function in
fixed-size batches; the box (Eq. 5 under the box rule, largest contour) is found on the map at
the input size and mapped back to the image's own pixels, and the map is resized to them.

An export folder holds `localizer.json` (the model config, class names, preprocessing, box rule,
provenance: `make_spec`) and `variables/` (an Orbax checkpoint of f's and g's variables, nothing
of the optimiser); `wsol_jax.stages.export` writes it, `load_localizer` reads and checks it.
Loading it needs neither the training workdir nor the data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import cv2
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from wsol_jax import boxes as boxes_lib, inference, workdir as workdir_lib
from wsol_jax.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from wsol_jax.data.images import resize_image, to_uint8
from wsol_jax.errors import WorkdirError
from wsol_jax.selection import load_selection
from wsol_jax.train import checkpoint
from wsol_jax.models.build import build_classifier, build_weight_map_net

MANIFEST = 'localizer.json'
VARIABLES = 'variables'
FORMAT_VERSION = 2  # 2: f named by its architecture (f.arch), optional
# The keys of localizer.json (`make_spec`), all required but the digests (exports from before them
# load), and those of its networks (f: None where the localiser has no classifier).
SPEC_KEYS = (
    'format_version',
    'input_size',
    'num_classes',
    'class_names',
    'threshold_ratio',
    'box_rule',
    'dtype',
    'f',
    'g',
    'preprocessing',
    'box',
    'source',
)
NETWORK_KEYS = {'f': ('arch', 'width'), 'g': ('depth', 'width', 'decoder', 'decoder_channels')}


@dataclasses.dataclass
class Prediction:
    """Per image `i` of a call: `maps[i]` `(H_i, W_i)` float32 in [0, 1] at the image's own
    resolution (`(size, size)` where the call keeps the input size); `boxes` `(N, 4)` int
    `[x0, y0, x1, y1]` in each image's own pixels (x1, y1 exclusive); `classes` `(N,)` f's top-1
    class; `probabilities` `(N,)` its softmax probability; `scores` `(N,)` S of Eq. 6 (the share
    of the thresholded map inside the box)."""

    maps: list
    boxes: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray


def to_rgb(image) -> np.ndarray:
    """Any uint8 image, `(H, W)` grey, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` with alpha, as
    `(H, W, 3)` RGB; alpha is composited over white, as files are read (`images.to_uint8`)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f'images must be uint8 (0-255), got {image.dtype}; convert with .astype(np.uint8) after scaling to 0-255'
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    if image.ndim == 3 and image.shape[-1] == 4:
        return to_uint8(Image.fromarray(np.ascontiguousarray(image), 'RGBA'), 'RGB')
    raise ValueError(f'an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}')


def map_to_image(weight_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """A `(size, size)` map resized to an image's own `(height, width)` (bilinear), float32."""
    return cv2.resize(np.asarray(weight_map, np.float32), (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def box_to_image(boxes: np.ndarray, size: int, widths, heights) -> np.ndarray:
    """`(N, 4)` boxes on the `size x size` network input -> each image's own pixels
    (`x * W / size`, `y * H / size`, rounded; an empty box stays empty)."""
    scale = np.stack([np.asarray(widths), np.asarray(heights)] * 2, axis=1) / size
    return np.round(np.asarray(boxes, np.float64) * scale).astype(np.int64)


class Localizer:
    """`localizer(images) -> Prediction`; see the module docstring."""

    def __init__(
        self, spec: dict, g_vars, f_vars=None, batch_size: int = 32, classify=None, f_input: str = 'normalized'
    ):
        """`f_vars`: the classifier f of `spec['f']` (None: no classifier, e.g. an encoder f);
        `classify`: instead, any `images -> logits` (`fit_weight_map`'s f, `f_input` as there),
        kept in memory only (an export holds g and the spec's f, never a Python function)."""
        self.spec = spec
        self.size = int(spec['input_size'])
        self.batch_size = batch_size
        cfg = _model_config(spec)
        self.g_model = build_weight_map_net(cfg)
        self.g_vars = jax.device_put(g_vars)
        self.f_vars = None if f_vars is None else jax.device_put(f_vars)
        if f_vars is not None:
            f_model = build_classifier(cfg, spec['num_classes'])
            classify = lambda v, x: f_model.apply(v, x, train=False)
        elif classify is not None:
            classify = inference.f_of_normalized(classify, f_input)
        self.has_classes = classify is not None
        self._fn = jax.jit(
            functools.partial(
                inference.localize_whole_images,
                self.g_model,
                classify,
                self.size,
                spec['threshold_ratio'],
                spec['box_rule'],
            )
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.spec['class_names'])

    def class_name(self, k: int) -> str:
        """The name of class `k`; '' for -1, the class of a prediction without a classifier."""
        return self.spec['class_names'][int(k)] if k >= 0 else ''

    def preprocess(self, images) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Images -> `(N, size, size, 3)` uint8 network inputs and their own `(width, height)`."""
        if isinstance(images, np.ndarray) and (images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (3, 4))):
            raise ValueError(
                f'got one image of shape {images.shape}; pass a batch (N, H, W, 3) or a list: '
                'localizer([image]) or localizer(image[None])'
            )
        rgb = [to_rgb(im) for im in images]
        sizes = [(im.shape[1], im.shape[0]) for im in rgb]
        return np.stack([resize_image(im, self.size) for im in rgb]), sizes

    def _run(self, inputs: np.ndarray):
        """The compiled function over fixed-size batches (the last one padded): numpy outputs."""
        outs = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            outs.append([np.asarray(o)[: self.batch_size - pad] for o in self._fn(self.g_vars, self.f_vars, chunk)])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def __call__(self, images, own_resolution: bool = True) -> Prediction:
        """`images`: `(N, H, W, 3)` uint8 (or `(N, H, W)` grey), or a list of uint8 images of any
        sizes. `own_resolution=False` keeps the maps and boxes at the network's input size."""
        if len(images) == 0:
            return self.localize(np.zeros((0, self.size, self.size, 3), np.uint8))
        inputs, sizes = self.preprocess(images)
        return self.localize(inputs, sizes if own_resolution else None)

    def localize(self, inputs: np.ndarray, sizes=None, resize_maps: bool = True) -> Prediction:
        """Network inputs `(N, size, size, 3)` uint8 (`preprocess`'s) -> a `Prediction`. `sizes`:
        each image's own `(width, height)`: the boxes are mapped to its pixels, and so are the
        maps unless `resize_maps=False` (then they stay `(size, size)`: predict resizes each one
        with `map_to_image` only when it writes it, so that memory does not grow with the
        images' size). `sizes=None`: boxes and maps at the input size."""
        if len(inputs) == 0:
            return Prediction([], np.zeros((0, 4), np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        maps, maps_hat, probs = self._run(np.asarray(inputs))
        boxes = boxes_lib.boxes_from_thresholded(maps_hat, self.spec['box_rule'])
        scores = np.asarray(boxes_lib.containment_score(maps_hat, boxes))
        if probs.shape[1]:
            classes, confidence = probs.argmax(-1), probs.max(-1)
        else:  # no classifier: no class, no probability
            classes, confidence = np.full(len(probs), -1), np.full(len(probs), np.nan)
        maps = list(maps)
        if sizes is None:
            boxes = boxes.astype(np.int64)
        else:
            widths, heights = zip(*sizes)
            boxes = box_to_image(boxes, self.size, widths, heights)
            if resize_maps:
                maps = [map_to_image(m, w, h) for m, (w, h) in zip(maps, sizes)]
        return Prediction(maps, boxes, classes, confidence, scores)

    @classmethod
    def from_workdir(cls, workdir: str, batch_size: int = 32) -> 'Localizer':
        """The selected step of `g` and the kept classifier `f` of a finished training run."""
        workdir = os.path.abspath(workdir)
        config_path = workdir_lib.path(workdir, workdir_lib.CONFIG)
        if not os.path.isfile(config_path):
            raise WorkdirError(
                f'{workdir} holds no {workdir_lib.CONFIG}: not a wsol-jax workdir, or training never started'
            )
        config = ml_collections.ConfigDict(workdir_lib.read_json(config_path))
        selection = load_selection(workdir)
        classes = workdir_lib.read_json(workdir_lib.path(workdir, workdir_lib.CLASSES))
        if classes is None:
            raise WorkdirError(
                f'{workdir} holds no {workdir_lib.CLASSES} (written by runs of this version); '
                'run any stage once (e.g. --stage=select) to write it'
            )
        spec = make_spec(config, classes['names'], selection)
        f_vars = None
        if spec['f'] is not None:  # the run has a classifier (an encoder f from a file has none)
            quality = (workdir_lib.read_json(workdir_lib.path(workdir, workdir_lib.F_QUALITY)) or {}).get(
                workdir_lib.F_CLASSIFIER
            )
            if quality is None:
                raise WorkdirError(f'{workdir} holds no finished f_classifier (f_quality.json); run --stage=train_f')
            f_vars, _ = _restore(
                workdir_lib.path(workdir, workdir_lib.F_CLASSIFIER),
                build_classifier(config, len(classes['names'])),
                spec,
                quality['kept_step'],
                'f (f_classifier)',
            )
        g_vars, _ = _restore(
            workdir_lib.path(workdir, workdir_lib.G),
            build_weight_map_net(config),
            spec,
            selection['selected_step'],
            'g',
        )
        return cls(spec, g_vars, f_vars, batch_size)


def make_spec(config, class_names: Sequence[str], selection: dict) -> dict:
    """What a localiser needs besides its variables, as JSON."""
    return {
        'format_version': FORMAT_VERSION,
        'input_size': int(config.data.crop_size),
        'num_classes': len(class_names),
        'class_names': [str(n) for n in class_names],
        'threshold_ratio': float(config.eval.threshold_ratio),
        'box_rule': config.eval.box_rule,
        'dtype': config.dtype,
        # the classifier f that names the class of a prediction (None: the run has none)
        'f': {k: config.f[k] for k in NETWORK_KEYS['f']} if workdir_lib.has_classifier(config) else None,
        'g': {k: list(config.g[k]) if k == 'decoder_channels' else config.g[k] for k in NETWORK_KEYS['g']},
        'preprocessing': {
            'resize': 'whole image to input_size x input_size, Pillow bilinear (no crop)',
            'normalization': '(x / 255 - mean) / std',
            'mean': IMAGENET_MEAN.tolist(),
            'std': IMAGENET_STD.tolist(),
        },
        'box': f'{boxes_lib.BOX_RULE_DESCRIPTIONS[config.eval.box_rule]} (ratio: threshold_ratio), '
        'largest OpenCV contour, its bounding rectangle',
        'source': {
            'method': config.method,
            'selected_step': selection['selected_step'],
            'selected_epoch': selection['selected_epoch'],
            'last_epoch': selection['last_epoch'],
            'seed': config.seed,
        },
    }


def _model_config(spec: dict) -> ml_collections.ConfigDict:
    """The part of a run config that builds the networks, from a spec."""
    return ml_collections.ConfigDict({'dtype': spec['dtype'], 'f': dict(spec['f'] or {}), 'g': dict(spec['g'])})


def _abstract_variables(model, size: int) -> dict:
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), np.zeros((1, size, size, 3), np.float32), train=False)
    )
    return {'params': shapes['params'], 'batch_stats': shapes.get('batch_stats', {})}


def _restore(directory: str, model, spec: dict, step, what: str) -> tuple[dict, dict]:
    """`{'params', 'batch_stats'}` of a training checkpoint (no optimiser state is read)."""
    return checkpoint.restore_inference_variables(directory, _abstract_variables(model, spec['input_size']), step, what)


def load_localizer(path: str, batch_size: int = 32) -> Localizer:
    """A localiser from an export folder (`--stage=export`) or, given a training workdir, from
    its selected step."""
    path = os.path.abspath(path)
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        if os.path.isfile(workdir_lib.path(path, workdir_lib.CONFIG)):
            return Localizer.from_workdir(path, batch_size)
        raise WorkdirError(
            f'{path} is neither an export (no {MANIFEST}) nor a training workdir; create one with --stage=export'
        )
    spec = _read_spec(manifest)
    try:
        cfg = _model_config(spec)
        target = {'g': _abstract_variables(build_weight_map_net(cfg), spec['input_size'])}
        if spec['f'] is not None:
            target['f'] = _abstract_variables(build_classifier(cfg, spec['num_classes']), spec['input_size'])
    except (KeyError, TypeError, ValueError) as e:
        raise WorkdirError(f'{manifest} does not describe a localiser ({type(e).__name__}: {e}); {REEXPORT}') from None
    return Localizer(spec, *_restore_export(path, spec, target), batch_size)


REEXPORT = 'export it again (--stage=export on its training workdir)'


def _read_spec(manifest: str) -> dict:
    try:
        with open(manifest) as fh:
            spec = json.load(fh)
    except ValueError:
        raise WorkdirError(f'{manifest} is not valid JSON; {REEXPORT}') from None
    if not isinstance(spec, dict) or spec.get('format_version') != FORMAT_VERSION:
        version = spec.get('format_version') if isinstance(spec, dict) else None
        raise WorkdirError(
            f'{manifest} has format_version {version}; this wsol-jax reads '
            f'{FORMAT_VERSION}: export it again with this version'
        )
    unknown, missing = _key_differences(spec)
    if unknown or missing:
        what = [f'unknown key(s) {", ".join(unknown)}'] * bool(unknown) + [f'no {", ".join(missing)}'] * bool(missing)
        raise WorkdirError(f'{manifest} has {" and ".join(what)}: it was not written by this wsol-jax; {REEXPORT}')
    return spec


def _key_differences(spec: dict) -> tuple[list[str], list[str]]:
    """`(unknown keys, missing keys)` of a manifest against `SPEC_KEYS` and `NETWORK_KEYS` (dotted)."""
    allowed = set(SPEC_KEYS) | {checkpoint.DIGESTS}
    unknown, missing = sorted(set(spec) - allowed), [k for k in SPEC_KEYS if k not in spec]
    for net, keys in NETWORK_KEYS.items():
        part = spec.get(net)
        if part is None and net == 'f':  # no classifier
            continue
        if not isinstance(part, dict):
            missing += [] if net not in spec else [f'{net} (a dict of {", ".join(keys)})']
            continue
        unknown += [f'{net}.{k}' for k in sorted(set(part) - set(keys))]
        missing += [f'{net}.{k}' for k in keys if k not in part]
    return unknown, missing


def _architecture(spec: dict) -> str:
    g, f = spec.get('g', {}), spec.get('f') or {}
    return (
        f'g {g.get("depth")} x{g.get("width")} {g.get("decoder")} decoder, f {f.get("arch")} x{f.get("width")}, '
        f'{spec.get("num_classes")} classes, {spec.get("input_size")} px'
    )


def _restore_export(path: str, spec: dict, target: dict) -> tuple[dict, dict]:
    """`(g variables, f variables)` of the export at `path`, checked against `localizer.json`:
    the same networks, the recorded sha256 of every array (exports from before the digests:
    finite values only), and readable files; otherwise one `WorkdirError`."""
    variables_dir = os.path.join(path, VARIABLES)
    differ = checkpoint.structure_differences(variables_dir, target)
    if differ:
        raise WorkdirError(
            f'{os.path.join(path, MANIFEST)} names other networks ({_architecture(spec)}) than '
            f'{variables_dir} holds: {checkpoint.some(differ)} differ; the two must come from one '
            f'export: {REEXPORT}'
        )
    try:
        with ocp.StandardCheckpointer() as ckpt:
            variables = ckpt.restore(variables_dir, target)
    except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, JSON and Unicode errors, ...
        raise WorkdirError(
            f'the export {variables_dir} cannot be read '
            f'({checkpoint.why_unreadable(variables_dir, "", target, e)}); {REEXPORT}'
        ) from None
    checkpoint.check_intact(variables, spec.get(checkpoint.DIGESTS), f'the export {variables_dir}', REEXPORT)
    return variables['g'], variables.get('f')
