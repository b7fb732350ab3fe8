"""ImageNet weights for the ResNets, from torchvision `.pth` or timm `.safetensors` files.

torchvision and timm name ResNet tensors alike (`conv1.weight`, `bn1.running_mean`,
`layer2.0.downsample.0.weight`, ...), so one mapping serves both: convolution kernels go from
PyTorch's OIHW to Flax's HWIO, BatchNorm weight/bias become scale/bias and the running
statistics become `batch_stats`. The classification layer (`fc.*`) is not used: `f` has its own
head. A file that does not match the backbone (other depth or width, missing tensors) fails with
the list of differences.
"""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from wsol_jax.errors import ConfigError
from wsol_jax.models.resnet import ResNet

IGNORED = re.compile(r'^fc\.|num_batches_tracked$')
PREFIXES = ('module.', 'model.', 'backbone.')
DOWNLOAD_HINT = ('torchvision: https://download.pytorch.org/models/resnet18-f37072fd.pth (resnet34-b627a593, '
                 'resnet50-0676ba61, resnet101-63fe2227); timm: model.safetensors of timm/resnet18.a1_in1k etc.')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a torchvision `.pth`/`.pt` or a `.safetensors` file, as numpy arrays."""
    if not os.path.isfile(path):
        raise ConfigError(f'pretrained weights not found: {path}. Download them on a machine with network ({DOWNLOAD_HINT})')
    if path.endswith('.safetensors'):
        from safetensors.numpy import load_file
        tensors = load_file(path)
    elif path.endswith(('.pth', '.pt', '.bin')):
        try:
            import torch
        except ImportError:
            raise ConfigError(f'reading {path} needs PyTorch (pip install torch), or use a .safetensors file') from None
        tensors = torch.load(path, map_location='cpu', weights_only=True)
        tensors = tensors.get('state_dict', tensors.get('model', tensors))
        tensors = {k: v.float().numpy() for k, v in tensors.items() if hasattr(v, 'numpy')}
    else:
        raise ConfigError(f'pretrained weights must be .pth, .pt, .bin or .safetensors, got {path}')
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


def resnet_variables(state_dict: dict[str, np.ndarray], depth: str, width: float = 1.0) -> dict:
    """`{'params', 'batch_stats'}` of `ResNet(depth, width)` from a torchvision/timm state dict."""
    target = jax.eval_shape(ResNet(depth, width).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    used, missing, mismatched = set(), [], []
    out = {}
    for collection in ('params', 'batch_stats'):
        leaves = jax.tree_util.tree_flatten_with_path(target[collection])[0]
        values = []
        for path, spec in leaves:
            keys = tuple(p.key for p in path)
            name = _torch_name(keys, collection)
            if name not in state_dict:
                missing.append(name)
                values.append(None)
                continue
            used.add(name)
            value = state_dict[name]
            if keys[-1] == 'kernel':
                value = value.transpose(2, 3, 1, 0)   # OIHW -> HWIO
            if value.shape != spec.shape:
                mismatched.append(f'{name}: file {tuple(state_dict[name].shape)} vs model {spec.shape}')
            values.append(jnp.asarray(value, jnp.float32))
        out[collection] = (jax.tree_util.tree_structure(target[collection]), values)
    unexpected = sorted(k for k in state_dict if k not in used and not IGNORED.search(k))
    if missing or mismatched or unexpected:
        def listing(title, items):
            return f'{len(items)} {title} ({", ".join(items[:6])}{", ..." if len(items) > 6 else ""})' if items else ''
        details = '; '.join(x for x in (listing('missing', missing), listing('with other shapes', mismatched),
                                        listing('unexpected', unexpected)) if x)
        raise ConfigError(f'the weights do not fit a {depth} of width {width}: {details}. '
                          'Check config.f/g.depth and width against the file')
    return {c: jax.tree_util.tree_unflatten(treedef, vals) for c, (treedef, vals) in out.items()}


def load_backbone(variables: dict, path: str, depth: str, width: float, submodule: str) -> dict:
    """`variables` with `variables[...][submodule]` (the ResNet inside `f` or `g`) replaced by
    the weights in `path`."""
    loaded = resnet_variables(read_state_dict(path), depth, width)
    new = {k: dict(v) for k, v in variables.items()}
    for collection in ('params', 'batch_stats'):
        new[collection][submodule] = loaded[collection]
    return new
