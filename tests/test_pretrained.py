"""ImageNet weight import: the Flax ResNets equal a PyTorch (torchvision-layout) reference forward
pass with the same weights, from .pth and .safetensors files; mismatches list what differs, and
every unreadable file (random bytes, empty, truncated, not a state dict) fails with one line that
names it. `check_pretrained` validates a file without compiling anything."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import save_state_dict
from wsol_jax.errors import ConfigError
from wsol_jax.models import Classifier, WeightMapNet, registry
from wsol_jax.models.pretrained import (
    backbone_variables,
    check_pretrained,
    load_backbone,
    read_state_dict,
    wants_pretrained,
    write_backbone,
)
from wsol_jax.models.resnet import scaled

torch = pytest.importorskip('torch')
tnn = torch.nn


class TBasic(tnn.Module):
    expansion = 1

    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = (
            tnn.Sequential(tnn.Conv2d(inp, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))
            if stride != 1 or inp != planes
            else None
        )

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = tnn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(out)
        self.downsample = (
            tnn.Sequential(tnn.Conv2d(inp, out, 1, stride, bias=False), tnn.BatchNorm2d(out))
            if stride != 1 or inp != out
            else None
        )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TResNet(tnn.Module):
    """torchvision.models.ResNet's layout and names (torchvision itself is not needed)."""

    def __init__(self, block, layers, num_classes=1000, width=1.0, stem='imagenet'):
        super().__init__()
        inp = scaled(64, width)
        # the small-image stem: a 3x3 stride-1 convolution (the max-pool stays)
        k, stride = (7, 2) if stem == 'imagenet' else (3, 1)
        self.conv1 = tnn.Conv2d(3, inp, k, stride, k // 2, bias=False)
        self.bn1 = tnn.BatchNorm2d(inp)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            planes = scaled(planes, width)
            for j in range(n):
                blocks.append(block(inp, planes, 2 if i > 0 and j == 0 else 1))
                inp = planes * block.expansion
            setattr(self, f'layer{i + 1}', tnn.Sequential(*blocks))
        self.fc = tnn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            feats.append(x)
        return feats


SPECS = {'resnet18': (TBasic, (2, 2, 2, 2)), 'resnet50': (TBottleneck, (3, 4, 6, 3))}
TINY = 0.125  # width of the files that the error tests read: 1/8 of the channels, fast to save and load


def _reference(depth, width=1.0, stem='imagenet'):
    torch.manual_seed(0)
    model = TResNet(*SPECS[depth], width=width, stem=stem)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
    """A resnet18 of width TINY saved in both formats: {'pth': path, 'safetensors': path}."""
    folder = tmp_path_factory.mktemp('tiny_weights')
    state_dict = _reference('resnet18', TINY).state_dict()
    return {fmt: save_state_dict(state_dict, str(folder / f'r18.{fmt}')) for fmt in ('pth', 'safetensors')}


# Both sides run in float64 from the same float32 weights (exactly representable), so they differ
# only by round-off: each output is a chain of ~50 sums of at most 3*3*512 = 4608 products, each
# rounding at eps = 2.2e-16 relative, so at worst ~50 * 4608 * eps ~ 5e-11 of the outputs' scale
# (measured: ~1e-15). 1e-9 is above that bound and five orders below the smallest modelling
# difference to catch (BatchNorm eps 1e-3 instead of 1e-5 moves outputs by ~1e-4, a kernel
# transposed or a stride on the wrong conv by O(1)), on any machine.
TOL64 = 1e-9


def _assert_equals_reference(model, path, arch, width=1.0):
    """The backbone of `arch` with the weights of `path` (`model`'s) gives `model`'s layer1..4."""
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
    with torch.no_grad():
        expected = [t.permute(0, 2, 3, 1).numpy() for t in model.double()(torch.from_numpy(x).permute(0, 3, 1, 2))]
    with jax.enable_x64(True):
        variables = jax.tree.map(
            lambda v: jnp.asarray(v, jnp.float64), backbone_variables(read_state_dict(path), arch, width)
        )
        backbone = registry.build(arch, width, jnp.float64)
        got = jax.jit(backbone.apply)(variables, jnp.asarray(x))[-4:]  # layer1..4
        assert all(g.dtype == jnp.float64 for g in got)
        got = [np.asarray(g) for g in got]
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        diff = float(np.abs(g - e).max())
        print(f'{arch} {path}: max abs difference {diff:.2e} (outputs up to {np.abs(e).max():.2f})')
        assert diff <= TOL64 * np.abs(e).max(), diff


@pytest.mark.parametrize('depth', ['resnet18', 'resnet50'])
@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_flax_backbone_equals_pytorch_reference(tmp_path, depth, fmt):
    model = _reference(depth)
    _assert_equals_reference(model, save_state_dict(model.state_dict(), str(tmp_path / f'weights.{fmt}')), depth)


def test_small_stem_equals_a_reference_with_a_3x3_stride_1_stem(tmp_path):
    """resnet18_small: the ResNet-18 whose first convolution is 3x3 at stride 1 (layer1 at half the
    image side: 32x32 for 64 px); the ImageNet file's 7x7 stem does not fit it."""
    model = _reference('resnet18', TINY, stem='small')
    path = save_state_dict(model.state_dict(), str(tmp_path / 'small.safetensors'))
    _assert_equals_reference(model, path, 'resnet18_small', TINY)
    imagenet = save_state_dict(_reference('resnet18', TINY).state_dict(), str(tmp_path / 'imagenet.safetensors'))
    with pytest.raises(ConfigError, match=r'conv1\.weight: file \(8, 3, 7, 7\) vs model \(3, 3, 3, 8\)'):
        check_pretrained(imagenet, 'resnet18_small', TINY)


def test_a_written_backbone_is_the_torchvision_state_dict(tiny_files, tmp_path):
    """`write_backbone` of the variables read from a torchvision file writes that file's tensors
    again, under its names (all but its `fc` classifier and BatchNorm step counters), bit for bit."""
    expected = {
        k: v.numpy()
        for k, v in _reference('resnet18', TINY).state_dict().items()
        if not k.startswith('fc.') and not k.endswith('num_batches_tracked')
    }
    variables = backbone_variables(read_state_dict(tiny_files['pth']), 'resnet18', TINY)
    written = read_state_dict(write_backbone(variables, 'resnet18', str(tmp_path / 'again.safetensors')))
    assert set(written) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)
    with pytest.raises(ConfigError, match='written as .safetensors'):
        write_backbone(variables, 'resnet18', str(tmp_path / 'again.pth'))


def test_weights_load_into_f_and_g(tmp_path):
    path = str(tmp_path / 'r18.pth')
    torch.save(_reference('resnet18').state_dict(), path)
    x = jnp.zeros((1, 64, 64, 3))
    for model, sub in ((Classifier(5), 'backbone'), (WeightMapNet(), 'encoder')):
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
        loaded = load_backbone(variables, path, 'resnet18', 1.0, sub)
        np.testing.assert_allclose(
            np.asarray(loaded['params'][sub]['conv1']['kernel']),
            _reference('resnet18').conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
        )
        assert float(jnp.abs(loaded['batch_stats'][sub]['layer4_1']['bn2']['var']).min()) >= 0.5


def test_mismatched_weights_list_the_differences(tmp_path):
    path = str(tmp_path / 'r18.pth')
    torch.save(_reference('resnet18').state_dict(), path)
    with pytest.raises(
        ConfigError, match=r'do not fit a resnet34 .*80 missing \(layer1\.2\.bn1\.bias.*layer1\.2\.conv1\.weight'
    ):
        backbone_variables(read_state_dict(path), 'resnet34')
    with pytest.raises(
        ConfigError, match=r'100 with other shapes .*conv1\.weight: file \(64, 3, 7, 7\) vs model \(7, 7, 3, 32\)'
    ):
        backbone_variables(read_state_dict(path), 'resnet18', width=0.5)
    with pytest.raises(ConfigError, match='pretrained weights not found'):
        read_state_dict(str(tmp_path / 'absent.pth'))


def _random_bytes(path, files):
    with open(path, 'wb') as f:
        f.write(np.random.default_rng(0).bytes(4096))


def _empty(path, files):
    open(path, 'wb').close()


def _truncated(path, files):
    with open(files[path.rsplit('.', 1)[1]], 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[: len(data) // 2])


# name -> (file name, writer(path, tiny_files), the reason the error must give)
UNREADABLE = {
    'random_pth': ('x.pth', _random_bytes, 'not a readable PyTorch file'),
    'random_safetensors': ('x.safetensors', _random_bytes, 'not a readable safetensors file'),
    'empty_pth': ('x.pth', _empty, 'the file is empty'),
    'empty_safetensors': ('x.safetensors', _empty, 'the file is empty'),
    'truncated_pth': ('x.pth', _truncated, 'not a readable PyTorch file, corrupt or truncated'),
    'truncated_safetensors': ('x.safetensors', _truncated, 'not a readable safetensors file, corrupt or truncated'),
    'list_pth': ('x.pth', lambda p, f: torch.save([torch.zeros(3)], p), r'holds a list, not a state dict'),
    'tensor_pth': ('x.pth', lambda p, f: torch.save(torch.zeros(3), p), r'holds a Tensor, not a state dict'),
    'whole_model_pth': (
        'x.pth',
        lambda p, f: torch.save(tnn.Linear(2, 2), p),
        r'pickles Python objects \(torch\.nn\.modules\.linear\.Linear\).*model\.state_dict\(\)',
    ),
    'no_tensors_pth': ('x.pth', lambda p, f: torch.save({'epoch': 3}, p), 'it holds no tensors'),
}


@pytest.mark.parametrize('case', sorted(UNREADABLE))
def test_unreadable_file_is_one_line_naming_it(tmp_path, tiny_files, case):
    name, write, reason = UNREADABLE[case]
    path = str(tmp_path / name)
    write(path, tiny_files)
    for read in (lambda: read_state_dict(path), lambda: check_pretrained(path, 'resnet18', TINY)):
        with pytest.raises(ConfigError, match=reason) as error:
            read()
        message = str(error.value)
        assert message.startswith(f'cannot read pretrained weights {path}: ') and 'download them again' in message
        assert '\n' not in message and len(message) < 600, message


def test_wrong_ranks_are_listed_not_crashed(tmp_path, tiny_files):
    tensors = read_state_dict(tiny_files['safetensors'])
    tensors['conv1.weight'] = tensors['conv1.weight'].reshape(8, -1)  # a conv kernel stored 2-D
    tensors['bn1.weight'] = tensors['bn1.weight'][:, None]  # a BatchNorm vector stored 2-D
    from safetensors.numpy import save_file

    path = str(tmp_path / 'ranks.safetensors')
    save_file(tensors, path)
    listing = (
        r'do not fit a resnet18 of width 0\.125: 2 with other shapes \(bn1\.weight: file \(8, 1\) vs '
        r'model \(8,\), conv1\.weight: file \(8, 147\) vs model \(7, 7, 3, 8\)\)'
    )
    with pytest.raises(ConfigError, match=listing):
        backbone_variables(read_state_dict(path), 'resnet18', TINY)
    with pytest.raises(ConfigError, match=f'weights in {path} ' + listing):
        check_pretrained(path, 'resnet18', TINY)


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_check_pretrained_passes_a_fitting_file_without_compiling(tiny_files, fmt):
    from wsol_jax.models import pretrained

    pretrained._abstract_variables.cache_clear()  # trace again, so the check covers it
    events = []

    def listen(name, duration, **kwargs):
        events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        assert check_pretrained(tiny_files[fmt], 'resnet18', TINY) is None
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not [e for e in events if 'backend_compile' in e or 'mlir_module' in e], events


def test_check_pretrained_lists_differences_of_another_backbone(tiny_files):
    path = tiny_files['pth']
    with pytest.raises(
        ConfigError,
        match=rf'weights in {path} do not fit a resnet34 of width 0\.125: 80 missing '
        r'\(layer1\.2\.bn1\.bias.*Check config\.f/g\.depth',
    ):
        check_pretrained(path, 'resnet34', TINY)
    with pytest.raises(ConfigError, match=r'do not fit a resnet18 of width 0\.25: 100 with other shapes'):
        check_pretrained(path, 'resnet18', 0.25)
    with pytest.raises(ConfigError, match='pretrained weights not found'):
        check_pretrained(path + '.missing.pth', 'resnet18', TINY)


@pytest.mark.parametrize('value', ['', 'none', 'None', 'NONE', ' none '])
def test_none_and_empty_mean_no_file(value):
    assert not wants_pretrained(value)
    assert check_pretrained(value, 'resnet18', TINY) is None
    variables = {'params': {'backbone': {}}, 'batch_stats': {'backbone': {}}}
    assert load_backbone(variables, value, 'resnet18', TINY, 'backbone') is variables


def test_a_path_wants_pretrained():
    assert wants_pretrained('weights/resnet18-f37072fd.pth') and wants_pretrained('none.pth')
