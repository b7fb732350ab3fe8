"""The f architectures beyond the ResNets: the Flax ViT and ConvNeXt equal PyTorch forwards written
here in timm's layout and with timm's tensor names (so their state dicts are the real layout),
from .pth and .safetensors files; position embeddings are resampled as timm's
`resample_abs_pos_embed` (torch bicubic, antialiased) at other input sizes and at import; files
of another size fail with the listing; the full-size parameter counts are timm's.

Precision: both sides run in float64 from the same float32 weights (exactly representable), so
they differ only by round-off. A forward here is a few dozen layers of sums of at most 128
products per output, each rounding at eps = 2.2e-16 relative: worst case ~1e-13 of the outputs'
scale even after a LayerNorm's 1/sigma amplification (the inputs have unit scale; measured:
~1e-15). TOL = 1e-10 of the
largest output leaves three orders of magnitude above that, and stays four below the smallest
modelling difference that these tests must catch: LayerNorm eps 1e-5 instead of 1e-6 moves
outputs by ~(1e-5 - 1e-6) / (2 var) ~ 1e-6, tanh-GELU by ~1e-3, bicubic without antialiasing by
~1e-1 (checked below).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import BF16_LAYERS, bf16_tolerance, save_state_dict
from wsol_jax.errors import ConfigError
from wsol_jax.models import Classifier, registry
from wsol_jax.models.pretrained import (
    backbone_variables,
    check_pretrained,
    load_backbone,
    read_state_dict,
    write_backbone,
)
from wsol_jax.models.vit import resample_pos_embed

torch = pytest.importorskip('torch')
tnn, F = torch.nn, torch.nn.functional

TOL = 1e-10
VIT = registry.ARCHS['vit_tiny_test'].options  # patch 8, embed 32, depth 2, heads 2, grid 4 (32 px)
CONVNEXT = registry.ARCHS['convnext_tiny_test'].options


def timm_resample(posemb, new_grid, old_grid):
    """timm's `resample_abs_pos_embed` (one prefix token; timm casts to float32 first, here the
    dtype is kept so that float64 stays float64)."""
    if tuple(new_grid) == tuple(old_grid):
        return posemb
    prefix, grid = posemb[:, :1], posemb[:, 1:]
    grid = grid.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode='bicubic', antialias=True)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, -1, posemb.shape[-1])], dim=1)


class TAttention(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TMlp(tnn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = tnn.Linear(dim, hidden), tnn.GELU(), tnn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TBlock(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = tnn.LayerNorm(dim, eps=1e-6), TAttention(dim, heads)
        self.norm2, self.mlp = tnn.LayerNorm(dim, eps=1e-6), TMlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TPatchEmbed(tnn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = tnn.Conv2d(3, dim, patch, patch)


class TViT(tnn.Module):
    """timm's VisionTransformer (global_pool='token', dynamic image size): its names and forward."""

    def __init__(self, patch_size, embed_dim, depth, num_heads, pos_grid, num_classes=10, head=True):
        super().__init__()
        self.grid = pos_grid
        self.patch_embed = TPatchEmbed(patch_size, embed_dim)
        self.cls_token = tnn.Parameter(torch.randn(1, 1, embed_dim) * 0.5)
        self.pos_embed = tnn.Parameter(torch.randn(1, 1 + pos_grid**2, embed_dim) * 0.5)
        self.blocks = tnn.Sequential(*[TBlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = tnn.LayerNorm(embed_dim, eps=1e-6)
        if head:
            self.head = tnn.Linear(embed_dim, num_classes)

    def forward(self, x):
        """Pooled features (pre-logits): the class token after the final norm."""
        x = self.patch_embed.proj(x)
        grid = x.shape[-2:]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + timm_resample(self.pos_embed, grid, (self.grid, self.grid))
        return self.norm(self.blocks(x))[:, 0]


class TLayerNorm2d(tnn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over the channels of NCHW."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class TConvBlock(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_dw = tnn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.mlp = tnn.LayerNorm(c, eps=1e-6), TMlp(c, 4 * c)
        self.gamma = tnn.Parameter(torch.empty(c).uniform_(0.5, 1.5))

    def forward(self, x):
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class TStage(tnn.Module):
    def __init__(self, cin, cout, depth, first):
        super().__init__()
        self.downsample = (
            tnn.Identity() if first else tnn.Sequential(TLayerNorm2d(cin, eps=1e-6), tnn.Conv2d(cin, cout, 2, 2))
        )
        self.blocks = tnn.Sequential(*[TConvBlock(cout) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class THead(tnn.Module):
    def __init__(self, c, num_classes):
        super().__init__()
        self.norm, self.fc = TLayerNorm2d(c, eps=1e-6), tnn.Linear(c, num_classes)


class TConvNeXt(tnn.Module):
    """timm's ConvNeXt (patch stem, conv_mlp=False, NormMlpClassifierHead): its names and forward."""

    def __init__(self, depths, dims, num_classes=10):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, dims[0], 4, 4), TLayerNorm2d(dims[0], eps=1e-6))
        self.stages = tnn.Sequential(*[TStage(dims[max(i - 1, 0)], dims[i], depths[i], i == 0) for i in range(4)])
        self.head = THead(dims[-1], num_classes)

    def forward(self, x):
        """Pooled features (pre-logits): global average, then the head's norm."""
        x = self.stages(self.stem(x)).mean(dim=(2, 3), keepdim=True)
        return self.head.norm(x).flatten(1)


def _randomise_norms(model):
    """Non-trivial LayerNorm affine parameters (the defaults 1 and 0 would hide a swapped pair)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _vit(**overrides):
    torch.manual_seed(0)
    return _randomise_norms(TViT(**{**VIT, **overrides}))


def _convnext():
    torch.manual_seed(1)
    return _randomise_norms(TConvNeXt(CONVNEXT['depths'], CONVNEXT['dims']))


def _images(h, w, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, 3))


def _torch64(model, x):
    with torch.no_grad():
        return model.double()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


@functools.lru_cache(maxsize=None)
def _forward64(arch):
    """The float64 backbone forward, compiled once per architecture and input shape."""
    return jax.jit(registry.build(arch, dtype=jnp.float64).apply)


def _flax64(arch, variables, x):
    with jax.enable_x64(True):
        variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
        out = _forward64(arch)(variables, jnp.asarray(x))
        assert out.dtype == jnp.float64
        return np.asarray(out)


def _close(got, expected, what):
    diff = float(np.abs(got - expected).max())
    print(f'{what}: max abs difference {diff:.2e} (outputs up to {np.abs(expected).max():.2f})')
    assert diff <= TOL * np.abs(expected).max(), (what, diff)


@pytest.fixture(scope='module')
def vit_files(tmp_path_factory):
    """The timm-layout ViT in both formats, and the reference model itself."""
    folder, model = tmp_path_factory.mktemp('vit'), _vit()
    formats = ('pth', 'safetensors')
    return model, {fmt: save_state_dict(model.state_dict(), str(folder / f'vit.{fmt}')) for fmt in formats}


@pytest.fixture(scope='module')
def convnext_files(tmp_path_factory):
    folder, model = tmp_path_factory.mktemp('convnext'), _convnext()
    formats = ('pth', 'safetensors')
    return model, {fmt: save_state_dict(model.state_dict(), str(folder / f'cnx.{fmt}')) for fmt in formats}


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_vit_equals_timm_layout_reference(vit_files, fmt):
    model, files = vit_files
    x = _images(32, 32)
    variables = backbone_variables(read_state_dict(files[fmt]), 'vit_tiny_test')
    _close(_flax64('vit_tiny_test', variables, x), _torch64(model, x), f'ViT {fmt} 32 px')


@pytest.mark.parametrize('size', [(48, 48), (24, 40)])  # grid 6x6 (upsampled), 3x5 (down and up)
def test_vit_resamples_position_embeddings_at_other_input_sizes(vit_files, size):
    model, files = vit_files
    x = _images(*size, seed=1)
    variables = backbone_variables(read_state_dict(files['safetensors']), 'vit_tiny_test')
    _close(_flax64('vit_tiny_test', variables, x), _torch64(model, x), f'ViT at {size[0]}x{size[1]} px')


@pytest.mark.parametrize('grid', [(4, 4), (2, 2), (3, 5), (24, 24)])
def test_pos_embed_resampling_is_torch_antialiased_bicubic(grid):
    """The released 14x14 grid to the 64 px (4x4) and 32 px (2x2) grids of patch 16, a
    non-square one, and up to 384 px; the JAX path (forward pass) equals the numpy one (import)."""
    posemb = np.random.default_rng(2).normal(size=(1, 1 + 14 * 14, 16))
    expected = timm_resample(torch.from_numpy(posemb), grid, (14, 14)).numpy()
    got = resample_pos_embed(posemb, (14, 14), grid)
    _close(got, expected, f'resampled 14x14 -> {grid}')
    with jax.enable_x64(True):
        traced = jax.jit(lambda p: resample_pos_embed(p, (14, 14), grid))(jnp.asarray(posemb))
        np.testing.assert_allclose(np.asarray(traced), got, rtol=0, atol=TOL * np.abs(got).max())
    if grid[0] < 14:  # shrinking: without antialiasing the result is far off, so the test can tell
        plain = (
            F.interpolate(
                torch.from_numpy(posemb[:, 1:]).reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=grid, mode='bicubic'
            )
            .permute(0, 2, 3, 1)
            .reshape(1, -1, 16)
            .numpy()
        )
        assert np.abs(plain - got[:, 1:]).max() > 1e-2


def test_vit_import_resamples_a_checkpoint_of_another_grid(tmp_path):
    """A 6x6-grid checkpoint (48 px) into the 4x4-grid model: timm's `checkpoint_filter_fn` step,
    computed in float64 and rounded once to float32 (at most one unit in the last place)."""
    model = _vit(pos_grid=6)
    path = save_state_dict(model.state_dict(), str(tmp_path / 'grid6.safetensors'))
    check_pretrained(path, 'vit_tiny_test', 1.0)
    got = np.asarray(backbone_variables(read_state_dict(path), 'vit_tiny_test')['params']['pos_embed'])
    expected = timm_resample(model.pos_embed.detach().double(), (4, 4), (6, 6)).numpy()
    assert got.shape == (1, 17, 32) and got.dtype == np.float32
    assert np.all(np.abs(got - expected) <= np.spacing(np.abs(expected).astype(np.float32)))


@pytest.mark.parametrize('arch', ['vit_tiny_test', 'convnext_tiny_test'])
def test_a_written_backbone_is_the_timm_state_dict(vit_files, convnext_files, tmp_path, arch):
    """`write_backbone` of the variables read from a timm-layout file writes its tensors again,
    under timm's names (all but its classification layer), bit for bit."""
    model, files = vit_files if arch.startswith('vit') else convnext_files
    head = 'head.' if arch.startswith('vit') else 'head.fc.'
    expected = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if not k.startswith(head)}
    variables = backbone_variables(read_state_dict(files['pth']), arch)
    written = read_state_dict(write_backbone(variables, arch, str(tmp_path / f'{arch}.safetensors')))
    assert set(written) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_convnext_equals_timm_layout_reference(convnext_files, fmt):
    model, files = convnext_files
    x = _images(64, 64)
    variables = backbone_variables(read_state_dict(files[fmt]), 'convnext_tiny_test')
    _close(_flax64('convnext_tiny_test', variables, x), _torch64(model, x), f'ConvNeXt {fmt} 64 px')


def test_convnext_cam_decomposes_the_class_score(convnext_files):
    """CAM's identity through the LayerNorm after pooling: the mean of the signed class map is the
    logit minus the bias minus w_k . beta (beta: the head norm's bias), exactly."""
    model, files = convnext_files
    f = Classifier(5, 'convnext_tiny_test')
    x = _images(64, 64, seed=3)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(f.init, jax.random.key(0), x))
    variables = load_backbone(zeros, files['pth'], 'convnext_tiny_test', 1.0, 'backbone')
    kernel, bias = np.random.default_rng(4).normal(size=(32, 5)), np.arange(5.0)
    variables['params']['head'] = {'kernel': kernel, 'bias': bias}
    classes = np.array([1, 4])
    with jax.enable_x64(True):
        f64 = Classifier(5, 'convnext_tiny_test', dtype=jnp.float64)
        cam = functools.partial(f64.apply, method=Classifier.class_activation_maps)
        maps = np.asarray(
            jax.jit(lambda v: cam(v, jnp.asarray(x), classes, False))(
                jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
            )
        )
    backbone = variables['params']['backbone']
    logits = _flax64('convnext_tiny_test', {'params': backbone}, x) @ kernel + bias
    beta = np.asarray(backbone['head_norm']['bias'])
    expected = logits[np.arange(2), classes] - bias[classes] - (beta @ kernel)[classes]
    assert maps.shape == (2, 2, 2) and maps.dtype == np.float64 and maps.min() < 0 < maps.max()  # signed
    _close(maps.mean(axis=(1, 2)), expected, 'ConvNeXt CAM mean vs class score')


def _listing_of(state_dict, arch, width=1.0):
    with pytest.raises(ConfigError) as error:
        backbone_variables(state_dict, arch, width)
    message = str(error.value)
    assert '\n' not in message and f'{arch} reads ' in message
    return message


def test_files_that_do_not_fit_list_what_differs(vit_files, convnext_files, tmp_path):
    vit = read_state_dict(vit_files[1]['pth'])
    cnx = read_state_dict(convnext_files[1]['safetensors'])
    # Every tensor of a ViT of width 2 (embed 64) has another shape: 30.
    assert (
        'do not fit a vit_tiny_test of width 2.0: 30 with other shapes (blocks.0.attn.proj.bias: file (32,) vs '
        'model (64,), blocks.0.attn.proj.weight: file (32, 32) vs model (64, 64), '
    ) in _listing_of(vit, 'vit_tiny_test', 2.0)
    # A model that pools by averaging (timm's fc_norm instead of norm, e.g. MAE fine-tuned) is another model.
    avg = {k.replace('norm.', 'fc_norm.') if k.startswith('norm.') else k: v for k, v in vit.items()}
    assert '2 missing (norm.bias, norm.weight); 2 unexpected (fc_norm.bias, fc_norm.weight)' in _listing_of(
        avg, 'vit_tiny_test'
    )
    # ConvNeXt-T has 18 blocks where the tiny one has 5: 13 x 9 tensors missing, the 63 others narrower.
    message = _listing_of(cnx, 'convnext_tiny')
    assert '117 missing (stages.0.blocks.1.conv_dw.bias, ' in message and '; 63 with other shapes (' in message
    assert 'stages.0.blocks.0.conv_dw.weight: file (8, 1, 7, 7) vs model (7, 7, 1, 96)' in message
    # A ConvNeXt file for a ViT: every ViT tensor missing, every ConvNeXt one but head.* unexpected.
    assert '30 missing (blocks.0.attn.proj.bias, ' in _listing_of(cnx, 'vit_tiny_test')
    path = save_state_dict({k: torch.from_numpy(v) for k, v in cnx.items()}, str(tmp_path / 'cnx.pth'))
    with pytest.raises(
        ConfigError,
        match=rf'weights in {path} do not fit a convnext_tiny of width 1\.0: .*with '
        r'other shapes \(head\.norm\.bias: file \(32,\) vs model \(768,\)',
    ):
        check_pretrained(path, 'convnext_tiny', 1.0)


def test_a_file_without_head_loads_and_the_head_is_ignored(vit_files):
    """DINO's backbone files have no `head.*`; timm's classifiers have one that f does not use."""
    model, files = vit_files
    full = read_state_dict(files['pth'])
    assert 'head.weight' in full
    headless = {k: v for k, v in full.items() if not k.startswith('head.')}
    a, b = (backbone_variables(s, 'vit_tiny_test') for s in (full, headless))
    assert set(a) == {'params'} and jax.tree.structure(a) == jax.tree.structure(b)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('arch', ['vit_tiny_test', 'convnext_tiny_test'])
def test_check_pretrained_compiles_nothing(vit_files, convnext_files, arch):
    from wsol_jax.models import pretrained

    pretrained._abstract_variables.cache_clear()  # trace again, so the check covers it
    path = (vit_files if arch.startswith('vit') else convnext_files)[1]['safetensors']
    events = []

    def listen(name, duration, **kwargs):
        events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        assert check_pretrained(path, arch, 1.0) is None
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not [e for e in events if 'backend_compile' in e or 'mlir_module' in e], events


# Parameter counts of timm's vit_{tiny,small,base}_patch16_224 and convnext_tiny with their
# 1000-class heads (torchvision's convnext_tiny has the same 28,589,128).
TIMM_PARAMS = {'vit_ti16': 5_717_416, 'vit_s16': 22_050_664, 'vit_b16': 86_567_656, 'convnext_tiny': 28_589_128}


@pytest.mark.parametrize('arch', sorted(TIMM_PARAMS))
def test_full_size_parameter_counts_and_shapes(arch):
    """Shapes only (`jax.eval_shape` traces without compiling): timm's counts with a 1000-class
    head, no BatchNorm statistics, logits at 64 px (the parameters do not depend on the input
    size) and the encoder's pooled features at 224 px."""
    f = Classifier(1000, arch)
    logits, variables = jax.eval_shape(
        f.init_with_output, jax.random.key(0), jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32)
    )
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params'])) == TIMM_PARAMS[arch]
    assert set(variables) == {'params'} and logits.shape == (8, 1000)
    encoder, dim = Classifier(0, arch, kind='encoder'), registry.feature_dim(arch)
    pooled = jax.eval_shape(
        encoder.apply,
        {'params': {'backbone': variables['params']['backbone']}},
        jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.float32),
    )
    assert pooled.shape == (8, dim) and pooled.dtype == jnp.float32


def test_encoder_and_classifier_kinds(vit_files):
    """An encoder f outputs the backbone's pooled features (here against the PyTorch reference in
    float32: relative round-off ~1e-6); a classifier f a dense layer of them."""
    model, files = vit_files
    x = _images(32, 32, seed=5).astype(np.float32)
    with torch.no_grad():
        pooled = model.float()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    backbone = backbone_variables(read_state_dict(files['pth']), 'vit_tiny_test')['params']
    head = {'kernel': np.random.default_rng(6).normal(size=(32, 3)).astype(np.float32), 'bias': np.ones(3, np.float32)}
    encoder, classifier = Classifier(0, 'vit_tiny_test', kind='encoder'), Classifier(3, 'vit_tiny_test')
    both = jax.jit(
        lambda b, h: (
            encoder.apply({'params': {'backbone': b}}, x),
            classifier.apply({'params': {'backbone': b, 'head': h}}, x),
        )
    )
    encoded, logits = both(backbone, head)
    assert encoded.shape == (2, 32) and logits.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(encoded), pooled, rtol=0, atol=1e-5 * np.abs(pooled).max())
    np.testing.assert_allclose(np.asarray(logits), pooled @ head['kernel'] + 1, rtol=0, atol=1e-4)


def test_wrong_settings_stop_with_one_line():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    cases = [
        (Classifier(10, 'vit_tiny_test', kind='encoder'), x, 'outputs its 32-d pooled features, not 10'),
        (Classifier(10, 'vit_tiny_test', kind='siamese'), x, 'kind of f must be one of'),
        (Classifier(10, 'vit_l16'), x, "unknown architecture 'vit_l16' for f: choose one of resnet18, "),
        (
            Classifier(10, 'vit_tiny_test'),
            jax.ShapeDtypeStruct((1, 36, 36, 3), jnp.float32),
            'multiple of 8, got 36x36',
        ),
    ]
    for model, inputs, message in cases:
        with pytest.raises(ConfigError, match=message):
            jax.eval_shape(model.init, jax.random.key(0), inputs)
    f = Classifier(10, 'vit_tiny_test')
    variables = jax.eval_shape(f.init, jax.random.key(0), x)
    with pytest.raises(ConfigError, match='CAM is not defined for an f of architecture vit_tiny_test'):
        jax.eval_shape(lambda v: f.apply(v, x, jnp.array([0]), method=Classifier.class_activation_maps), variables)
    assert [a for a in registry.ARCHS if registry.has_cam(a)] == [
        'resnet18',
        'resnet34',
        'resnet50',
        'resnet101',
        'convnext_tiny',
        'convnext_tiny_test',
        'resnet18_small',
        'resnet_tiny_test',
    ]


@pytest.mark.parametrize('arch', ['vit_tiny_test', 'convnext_tiny_test'])
def test_bfloat16_compute_keeps_float32_params_and_outputs(vit_files, convnext_files, arch):
    model, files = vit_files if arch.startswith('vit') else convnext_files
    x = _images(32, 32, seed=7).astype(np.float32)
    f16 = Classifier(4, arch, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(f16.init, jax.random.key(0), x)
    assert {v.dtype for v in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    kernel = np.random.default_rng(8).normal(size=shapes['params']['head']['kernel'].shape).astype(np.float32)
    variables = {
        'params': {
            'backbone': backbone_variables(read_state_dict(files['pth']), arch)['params'],
            'head': {'kernel': kernel, 'bias': np.zeros(4, np.float32)},
        }
    }
    out16 = jax.jit(f16.apply)(variables, x)
    with torch.no_grad():
        expected = model.float()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy() @ kernel
    assert out16.dtype == jnp.float32
    # Relative to the outputs' scale: the backbone's and the head's roundings in series (helpers.bf16_tolerance).
    np.testing.assert_allclose(
        np.asarray(out16), expected, rtol=0, atol=bf16_tolerance(BF16_LAYERS[arch]) * np.abs(expected).max()
    )
