"""ImageNet weight import: the Flax ResNets equal a PyTorch (torchvision-layout) reference forward
pass with the same weights, from .pth and .safetensors files; mismatches list what differs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsol_jax.errors import ConfigError
from wsol_jax.models import Classifier, ResNet, WeightMapNet
from wsol_jax.models.pretrained import load_backbone, read_state_dict, resnet_variables

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
        self.downsample = (tnn.Sequential(tnn.Conv2d(inp, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))
                           if stride != 1 or inp != planes else None)

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
        self.downsample = (tnn.Sequential(tnn.Conv2d(inp, out, 1, stride, bias=False), tnn.BatchNorm2d(out))
                           if stride != 1 or inp != out else None)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TResNet(tnn.Module):
    """torchvision.models.ResNet's layout and names (torchvision itself is not needed)."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
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


def _reference(depth):
    torch.manual_seed(0)
    model = TResNet(*SPECS[depth])
    with torch.no_grad():   # non-trivial BatchNorm statistics and affine parameters
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize('depth', ['resnet18', 'resnet50'])
@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_flax_backbone_equals_pytorch_reference(tmp_path, depth, fmt):
    model = _reference(depth)
    path = str(tmp_path / f'weights.{fmt}')
    if fmt == 'pth':
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = [t.permute(0, 2, 3, 1).numpy() for t in model(torch.from_numpy(x).permute(0, 3, 1, 2))]
    variables = resnet_variables(read_state_dict(path), depth)
    got = jax.jit(ResNet(depth).apply)(variables, jnp.asarray(x))[1:]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-3, atol=1e-3 * np.abs(e).max())


def test_weights_load_into_f_and_g(tmp_path):
    path = str(tmp_path / 'r18.pth')
    torch.save(_reference('resnet18').state_dict(), path)
    x = jnp.zeros((1, 64, 64, 3))
    for model, sub in ((Classifier(5), 'backbone'), (WeightMapNet(), 'encoder')):
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
        loaded = load_backbone(variables, path, 'resnet18', 1.0, sub)
        np.testing.assert_allclose(np.asarray(loaded['params'][sub]['conv1']['kernel']),
                                   _reference('resnet18').conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
        assert float(jnp.abs(loaded['batch_stats'][sub]['layer4_1']['bn2']['var']).min()) >= 0.5


def test_mismatched_weights_list_the_differences(tmp_path):
    path = str(tmp_path / 'r18.pth')
    torch.save(_reference('resnet18').state_dict(), path)
    with pytest.raises(ConfigError, match=r'do not fit a resnet34 .*80 missing \(layer1\.2\.bn1\.bias.*layer1\.2\.conv1\.weight'):
        resnet_variables(read_state_dict(path), 'resnet34')
    with pytest.raises(ConfigError, match=r'100 with other shapes .*conv1\.weight: file \(64, 3, 7, 7\) vs model \(7, 7, 3, 32\)'):
        resnet_variables(read_state_dict(path), 'resnet18', width=0.5)
    with pytest.raises(ConfigError, match='pretrained weights not found'):
        read_state_dict(str(tmp_path / 'absent.pth'))
