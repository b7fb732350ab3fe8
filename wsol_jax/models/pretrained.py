"""ImageNet weights for the ResNets, from torchvision `.pth` or timm `.safetensors` files.

torchvision and timm name ResNet tensors alike (`conv1.weight`, `bn1.running_mean`,
`layer2.0.downsample.0.weight`, ...), so one mapping serves both: convolution kernels go from
PyTorch's OIHW to Flax's HWIO, BatchNorm weight/bias become scale/bias and the running
statistics become `batch_stats`. The classification layer (`fc.*`) is not used: `f` has its own
head. A file that does not match the backbone (other depth or width, missing tensors) fails with
the list of differences; a file that cannot be read (corrupt, truncated, not a state dict) fails
with one line that names it. `check_pretrained` runs both checks before any training starts.
"""
from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.errors import ConfigError
from wsol_jax.models.resnet import ResNet

IGNORED = re.compile(r'^fc\.|num_batches_tracked$')
PREFIXES = ('module.', 'model.', 'backbone.')
NO_FILE = ('', 'none')   # config values of `pretrained` that mean "train from scratch"
DOWNLOAD_HINT = ('torchvision: https://download.pytorch.org/models/resnet18-f37072fd.pth (resnet34-b627a593, '
                 'resnet50-0676ba61, resnet101-63fe2227); timm: model.safetensors of timm/resnet18.a1_in1k etc.')


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
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _torch_reason(exc: BaseException) -> str:
    """Why `torch.load(weights_only=True)` failed, in the user's terms."""
    cause = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ else exc
    found = re.search(r'GLOBAL (\S+)', str(cause))
    if found:   # the safe unpickler met a class: the file pickles objects, not just tensors
        return (f'it pickles Python objects ({found.group(1)}), e.g. a whole model, not a state dict of '
                'tensors as torch.save(model.state_dict(), path) writes')
    return f'not a readable PyTorch file, corrupt or truncated ({_first_sentence(cause)})'


def _load_torch(path: str) -> Any:
    """Whatever a `.pth`/`.pt`/`.bin` file holds, loaded without running pickled code."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f'reading {path} needs PyTorch (pip install torch), or use a .safetensors file') from None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:   # torch raises RuntimeError, UnpicklingError, EOFError, ... by cause
        raise _unreadable(path, _torch_reason(exc)) from exc


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file."""
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as exc:   # SafetensorError (bad header, truncated), TypeError (dtype), OSError
        raise _unreadable(path, f'not a readable safetensors file, corrupt or truncated '
                                f'({_first_sentence(exc)})') from exc


def _tensors_of(path: str, loaded: Any) -> dict[str, Any]:
    """The state dict inside a loaded `.pth`: the object itself, or its `state_dict`/`model`
    entry (training checkpoints wrap it), keeping only the tensors."""
    if isinstance(loaded, Mapping):
        loaded = loaded.get('state_dict', loaded.get('model', loaded))
    if not isinstance(loaded, Mapping):
        raise _unreadable(path, f'it holds a {type(loaded).__name__}, not a state dict (a dict of tensor '
                                'names to tensors, as torch.save(model.state_dict(), path) writes)')
    return {k: v.float().numpy() for k, v in loaded.items() if hasattr(v, 'numpy')}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a torchvision `.pth`/`.pt` or a `.safetensors` file, as numpy arrays.
    Any file that cannot be read raises `ConfigError` naming it."""
    if os.path.isdir(path):
        raise ConfigError(f'pretrained weights {path} is a folder: pass the .pth or .safetensors file in it')
    if not os.path.isfile(path):
        raise ConfigError(f'pretrained weights not found: {path}. Download them on a machine with network ({DOWNLOAD_HINT})')
    if not path.endswith(('.safetensors', '.pth', '.pt', '.bin')):
        raise ConfigError(f'pretrained weights must be .pth, .pt, .bin or .safetensors, got {path}')
    if os.path.getsize(path) == 0:   # an interrupted download; the libraries' messages would not say so
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
            key = key[len(prefix):] if key.startswith(prefix) else key
        out[key] = np.asarray(value)
    return out


def _torch_name(flax_path: tuple[str, ...], collection: str) -> str:
    """('layer1_0', 'downsample_bn', 'scale') -> 'layer1.0.downsample.1.weight'."""
    *modules, leaf = flax_path
    parts = []
    for m in modules:
        m = re.sub(r'^layer(\d)_(\d+)$', r'layer\1.\2', m)
        parts.append({'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(m, m))
    suffix = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
              'var': 'running_var'}[leaf]
    return '.'.join(parts + [suffix])


@functools.lru_cache(maxsize=None)
def _abstract_variables(depth: str, width: float) -> dict:
    """Shapes of `ResNet(depth, width)`'s variables, traced without allocating or compiling
    anything (cached: `check_pretrained` at start-up and `load_backbone` later ask for the same)."""
    # The key and the input are made inside the traced function: made eagerly, each would
    # compile and run a small XLA program on the device.
    return jax.eval_shape(lambda: ResNet(depth, width).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def _listing(title: str, items: list[str]) -> str:
    """'3 missing (a, b, c)', at most six names; '' when there are none."""
    if not items:
        return ''
    return f'{len(items)} {title} ({", ".join(items[:6])}{", ..." if len(items) > 6 else ""})'


def _fit(state_dict: dict[str, np.ndarray], depth: str, width: float, source: str) -> dict[str, list[np.ndarray]]:
    """The file's tensors in the layout and leaf order of `ResNet(depth, width)`'s collections.
    The one place where a file is matched against a backbone, for `resnet_variables` and
    `check_pretrained` alike; raises `ConfigError` listing every difference."""
    target = _abstract_variables(depth, width)
    used, missing, mismatched = set(), [], []
    out = {}
    for collection in ('params', 'batch_stats'):
        values = []
        for path, spec in jax.tree_util.tree_flatten_with_path(target[collection])[0]:
            keys = tuple(p.key for p in path)
            name = _torch_name(keys, collection)
            if name not in state_dict:
                missing.append(name)
                continue
            used.add(name)
            value = state_dict[name]
            if keys[-1] == 'kernel' and value.ndim == 4:   # another rank is listed below, not transposed
                value = value.transpose(2, 3, 1, 0)   # OIHW -> HWIO
            if value.shape != spec.shape:
                mismatched.append(f'{name}: file {tuple(state_dict[name].shape)} vs model {spec.shape}')
            values.append(value)
        out[collection] = values
    unexpected = sorted(k for k in state_dict if k not in used and not IGNORED.search(k))
    if missing or mismatched or unexpected:
        details = '; '.join(x for x in (_listing('missing', missing), _listing('with other shapes', mismatched),
                                        _listing('unexpected', unexpected)) if x)
        raise ConfigError(f'the weights{f" in {source}" if source else ""} do not fit a {depth} of width '
                          f'{width}: {details}. Check config.f/g.depth and width against the file')
    return out


def resnet_variables(state_dict: dict[str, np.ndarray], depth: str, width: float = 1.0, source: str = '') -> dict:
    """`{'params', 'batch_stats'}` of `ResNet(depth, width)` from a torchvision/timm state dict
    (`source`, the file it came from, is named in errors)."""
    target = _abstract_variables(depth, width)
    fitted = _fit(state_dict, depth, width, source)
    return {c: jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target[c]),
                                            [jnp.asarray(v, jnp.float32) for v in fitted[c]])
            for c in fitted}


def check_pretrained(path: str, depth: str, width: float) -> None:
    """Raise `ConfigError` unless `path` is `''`/`'none'` or a readable weight file holding every
    tensor of `ResNet(depth, width)` with the right shape. Nothing is put on a device or
    compiled, so a run can call this before it starts training."""
    if wants_pretrained(path):
        _fit(read_state_dict(path), depth, width, path)


def load_backbone(variables: dict, path: str, depth: str, width: float, submodule: str) -> dict:
    """`variables` with `variables[...][submodule]` (the ResNet inside `f` or `g`) replaced by
    the weights in `path`; unchanged when `path` is `''` or `'none'` (from scratch)."""
    if not wants_pretrained(path):
        return variables
    loaded = resnet_variables(read_state_dict(path), depth, width, source=path)
    new = {k: dict(v) for k, v in variables.items()}
    for collection in ('params', 'batch_stats'):
        new[collection][submodule] = loaded[collection]
    return new
