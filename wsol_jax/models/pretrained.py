"""Pretrained weights for the backbones of `f` and `g`, from `.pth` or `.safetensors` files.

One name mapping per family (`LAYOUTS`), one conversion and one check for all. ResNets:
torchvision and timm name their tensors alike (`conv1.weight`, `bn1.running_mean`,
`layer2.0.downsample.0.weight`, ...), BatchNorm weight/bias become scale/bias and the running
statistics `batch_stats`. ViTs: timm's `vit_*` names (`patch_embed.proj.weight`, `cls_token`,
`pos_embed`, `blocks.0.attn.qkv.weight`, ..., `norm.weight`), which DeiT and DINO files share;
position embeddings of another patch grid are resampled. ConvNeXt: timm's `convnext_*` names
(`stem.0.weight`, `stages.1.downsample.1.weight`, `stages.0.blocks.0.conv_dw.weight`, ...,
`head.norm.weight`). Convolution kernels go from PyTorch's OIHW to Flax's HWIO, Linear weights
are transposed. The classification layer (`fc.*`, `head.*`, `head.fc.*`) is not used: `f` has its
own head. A file that does not match the backbone (other architecture or width, missing tensors)
fails with the list of differences; a file that cannot be read (corrupt, truncated, not a state
dict) fails with one line that names it. `check_pretrained` runs both checks before any training
starts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.errors import ConfigError
from wsol_jax.models import registry
from wsol_jax.models.vit import resample_pos_embed

PREFIXES = ('module.', 'model.', 'backbone.')
NO_FILE = ('', 'none')  # config values of `pretrained` that mean "train from scratch"
DOWNLOAD_HINT = (
    'torchvision: https://download.pytorch.org/models/resnet18-f37072fd.pth (resnet34-b627a593, '
    'resnet50-0676ba61, resnet101-63fe2227); timm: model.safetensors of timm/resnet18.a1_in1k, '
    'timm/vit_small_patch16_224.augreg_in21k_ft_in1k, timm/convnext_tiny.fb_in1k etc.'
)


def wants_pretrained(value: str) -> bool:
    """Whether a `pretrained` config value names a weight file: `''` and `'none'` (any case)
    mean training from scratch, the latter on purpose."""
    return (value or '').strip().lower() not in NO_FILE


def _unreadable(path: str, reason: str) -> ConfigError:
    """The one-line error for a weight file that exists but cannot be used."""
    return ConfigError(f'cannot read pretrained weights {path}: {reason}; download them again ({DOWNLOAD_HINT})')


def _first_sentence(exc: BaseException, limit: int = 120) -> str:
    """The gist of a library's exception. torch's messages run over several lines of advice
    (`weights_only`, allow-lists) that does not apply to a weight file, so only the first
    sentence is kept."""
    text = ' '.join(str(exc).split())
    text = re.sub(r'\x1b\[[0-9;]*m', '', text).split('. ')[0].rstrip('.') or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + '...'


def _torch_reason(exc: BaseException) -> str:
    """Why `torch.load(weights_only=True)` failed, in the user's terms."""
    cause = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ else exc
    found = re.search(r'GLOBAL (\S+)', str(cause))
    if found:  # the safe unpickler met a class: the file pickles objects, not just tensors
        return (
            f'it pickles Python objects ({found.group(1)}), e.g. a whole model, not a state dict of '
            'tensors as torch.save(model.state_dict(), path) writes'
        )
    return f'not a readable PyTorch file, corrupt or truncated ({_first_sentence(cause)})'


def _load_torch(path: str) -> Any:
    """Whatever a `.pth`/`.pt`/`.bin` file holds, loaded without running pickled code."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f'reading {path} needs PyTorch (pip install torch), or use a .safetensors file') from None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... by cause
        raise _unreadable(path, _torch_reason(exc)) from exc


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file."""
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError (bad header, truncated), TypeError (dtype), OSError
        raise _unreadable(
            path, f'not a readable safetensors file, corrupt or truncated ({_first_sentence(exc)})'
        ) from exc


def _tensors_of(path: str, loaded: Any) -> dict[str, Any]:
    """The state dict inside a loaded `.pth`: the object itself, or its `state_dict`/`model`
    entry (training checkpoints wrap it), keeping only the tensors."""
    if isinstance(loaded, Mapping):
        loaded = loaded.get('state_dict', loaded.get('model', loaded))
    if not isinstance(loaded, Mapping):
        raise _unreadable(
            path,
            f'it holds a {type(loaded).__name__}, not a state dict (a dict of tensor '
            'names to tensors, as torch.save(model.state_dict(), path) writes)',
        )
    return {k: v.float().numpy() for k, v in loaded.items() if hasattr(v, 'numpy')}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a torchvision `.pth`/`.pt` or a `.safetensors` file, as numpy arrays.
    Any file that cannot be read raises `ConfigError` naming it."""
    if os.path.isdir(path):
        raise ConfigError(f'pretrained weights {path} is a folder: pass the .pth or .safetensors file in it')
    if not os.path.isfile(path):
        raise ConfigError(
            f'pretrained weights not found: {path}. Download them on a machine with network ({DOWNLOAD_HINT})'
        )
    if not path.endswith(('.safetensors', '.pth', '.pt', '.bin')):
        raise ConfigError(f'pretrained weights must be .pth, .pt, .bin or .safetensors, got {path}')
    if os.path.getsize(path) == 0:  # an interrupted download; the libraries' messages would not say so
        raise _unreadable(path, 'the file is empty')
    if path.endswith('.safetensors'):
        tensors = _load_safetensors(path)
    else:
        tensors = _tensors_of(path, _load_torch(path))
    if not tensors:
        raise _unreadable(path, 'it holds no tensors')
    out = {}
    for key, value in tensors.items():
        for prefix in PREFIXES:
            key = key[len(prefix) :] if key.startswith(prefix) else key
        out[key] = np.asarray(value)
    return out


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a family's Flax variables are named in its PyTorch checkpoints. A Flax path maps
    mechanically (`blocks_3/attn/qkv/kernel` -> `blocks.3.attn.qkv.weight`) except for the
    modules in `renames`; `ignored` matches the file's tensors that `f` does not use (its own
    classification layer: f trains a head of its own, as for the ResNets)."""

    renames: Mapping[str, str]
    ignored: re.Pattern


LAYOUTS = {
    'resnet': Layout(
        {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}, re.compile(r'^fc\.|num_batches_tracked$')
    ),
    'vit': Layout({'patch_embed': 'patch_embed.proj'}, re.compile(r'^head\.')),  # DINO files have no head
    'convnext': Layout({'head_norm': 'head.norm'}, re.compile(r'^head\.fc\.')),
}
LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}


def _torch_name(flax_path: tuple[str, ...], layout: Layout) -> str:
    """('layer1_0', 'downsample_bn', 'scale') -> 'layer1.0.downsample.1.weight'; a leaf that is a
    parameter of its own (`cls_token`, `pos_embed`, ConvNeXt's `gamma`) keeps its name."""
    *modules, leaf = flax_path
    parts = [layout.renames.get(m, re.sub(r'_(\d+)$', r'.\1', m)) for m in modules]
    return '.'.join(parts + [LEAVES.get(leaf, leaf)])


def _to_flax(leaf: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A file's tensor in Flax's layout: convolution kernels OIHW -> HWIO (a depthwise one,
    (C, 1, k, k), becomes Flax's (k, k, 1, C)), Linear weights (out, in) -> (in, out), and ViT
    position embeddings of another square patch grid resampled to the model's (timm's
    `checkpoint_filter_fn`). Anything else is returned as it is: `_fit` lists what still differs."""
    if leaf == 'kernel' and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == 'kernel' and value.ndim == 2:
        return value.T
    if leaf == 'pos_embed' and value.shape != shape and value.ndim == 3 and value.shape[-1] == shape[-1]:
        old, new = math.isqrt(value.shape[1] - 1), math.isqrt(shape[1] - 1)
        if old * old == value.shape[1] - 1 and new * new == shape[1] - 1:
            # In float64, rounded once to the file's dtype.
            return resample_pos_embed(value.astype(np.float64), (old, old), (new, new)).astype(value.dtype)
    return value


@functools.lru_cache(maxsize=None)
def _abstract_variables(arch: str, width: float) -> dict:
    """Shapes of the backbone `registry.build(arch, width)`'s variables, traced without allocating
    or compiling anything (cached: `check_pretrained` at start-up and `load_backbone` later ask
    for the same)."""
    # The key and the input are made inside the traced function: made eagerly, each would
    # compile and run a small XLA program on the device.
    backbone = registry.build(arch, width)
    return jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def _listing(title: str, items: list[str]) -> str:
    """'3 missing (a, b, c)', at most six names; '' when there are none."""
    if not items:
        return ''
    return f'{len(items)} {title} ({", ".join(items[:6])}{", ..." if len(items) > 6 else ""})'


def _fit(state_dict: dict[str, np.ndarray], arch: str, width: float, source: str) -> dict[str, list[np.ndarray]]:
    """The file's tensors in the layout and leaf order of the backbone of `arch` at `width`, per
    collection (`params`, and `batch_stats` for a ResNet). The one place where a file is matched
    against a backbone, for `backbone_variables` and `check_pretrained` alike; raises
    `ConfigError` listing every difference."""
    target = _abstract_variables(arch, width)
    entry = registry.get(arch)
    layout = LAYOUTS[entry.family]
    used, missing, mismatched = set(), [], []
    out = {}
    for collection in sorted(target, key=lambda c: c != 'params'):  # parameters listed first
        values = []
        for path, spec in jax.tree_util.tree_flatten_with_path(target[collection])[0]:
            keys = tuple(p.key for p in path)
            name = _torch_name(keys, layout)
            if name not in state_dict:
                missing.append(name)
                continue
            used.add(name)
            value = _to_flax(keys[-1], state_dict[name], spec.shape)
            if value.shape != spec.shape:
                mismatched.append(f'{name}: file {tuple(state_dict[name].shape)} vs model {spec.shape}')
            values.append(value)
        out[collection] = values
    unexpected = sorted(k for k in state_dict if k not in used and not layout.ignored.search(k))
    if missing or mismatched or unexpected:
        details = '; '.join(
            x
            for x in (
                _listing('missing', missing),
                _listing('with other shapes', mismatched),
                _listing('unexpected', unexpected),
            )
            if x
        )
        raise ConfigError(
            f'the weights{f" in {source}" if source else ""} do not fit a {arch} of width '
            f'{width}: {details}. Check config.f/g.depth and width against the file '
            f'({arch} reads {entry.weights})'
        )
    return out


def backbone_variables(state_dict: dict[str, np.ndarray], arch: str, width: float = 1.0, source: str = '') -> dict:
    """The variables (`{'params'}`, plus `'batch_stats'` for a ResNet) of the backbone of `arch`
    at `width` from a timm/torchvision state dict (`source`, the file it came from, is named in
    errors)."""
    target = _abstract_variables(arch, width)
    fitted = _fit(state_dict, arch, width, source)
    return {
        c: jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(target[c]), [jnp.asarray(v, jnp.float32) for v in fitted[c]]
        )
        for c in fitted
    }


def _to_torch(leaf: str, value: np.ndarray) -> np.ndarray:
    """The inverse of `_to_flax` at the model's own shapes: HWIO -> OIHW, Linear (in, out) -> (out, in)."""
    if leaf == 'kernel' and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if leaf == 'kernel' and value.ndim == 2:
        return value.T
    return value


def backbone_state_dict(variables: dict, arch: str) -> dict[str, np.ndarray]:
    """The backbone variables of `arch` (`{'params'}`, plus `'batch_stats'` for a ResNet: what
    `backbone_variables` returns, or the `backbone` part of a trained f) as a timm/torchvision
    state dict of float32 arrays, without a classification layer: `backbone_variables` of it
    gives `variables` back."""
    layout = LAYOUTS[registry.get(arch).family]
    out = {}
    for collection in variables:
        for path, value in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
            keys = tuple(p.key for p in path)
            out[_torch_name(keys, layout)] = np.ascontiguousarray(_to_torch(keys[-1], np.asarray(value, np.float32)))
    return out


def write_backbone(variables: dict, arch: str, path: str) -> str:
    """`backbone_state_dict(variables, arch)` written as the `.safetensors` file `path`: a backbone
    trained here becomes the `f.pretrained` (e.g. an encoder f, `f.train=False`) of another run."""
    from safetensors.numpy import save_file

    if not path.endswith('.safetensors'):
        raise ConfigError(f'a backbone is written as .safetensors, got {path}')
    save_file(backbone_state_dict(variables, arch), path)
    return path


def check_pretrained(path: str, arch: str, width: float) -> None:
    """Raise `ConfigError` unless `path` is `''`/`'none'` or a readable weight file holding every
    tensor of the backbone of `arch` (`wsol_jax.models.registry`) at `width` with the right
    shape. Nothing is put on a device or compiled, so a run can call this before it starts
    training."""
    if wants_pretrained(path):
        _fit(read_state_dict(path), arch, width, path)


def load_backbone(variables: dict, path: str, arch: str, width: float, submodule: str) -> dict:
    """`variables` with `variables[...][submodule]` (the backbone inside `f`, or the ResNet
    inside `g`) replaced by the weights in `path`, in every collection the backbone has;
    unchanged when `path` is `''` or `'none'` (from scratch)."""
    if not wants_pretrained(path):
        return variables
    loaded = backbone_variables(read_state_dict(path), arch, width, source=path)
    new = {k: dict(v) for k, v in variables.items()}
    for collection, value in loaded.items():
        new[collection][submodule] = value
    return new
