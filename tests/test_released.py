"""wsol-jax against the first author's released code (what-is-where-by-looking @ f237ab4).

* `eval.box_rule='released'` against `generate_bbox` (utils.py) written out below as released
  (matplotlib + OpenCV), on random and structured maps: the same thresholded grey image, the
  same box and the same S (its `energy`), on the host and on the device (jit, float32).
* `g` against a PyTorch module written below from the released base.py / model.py / resnet.py
  (`SkipDecoder`, `SkipUpBlock`, `BottleneckBlock`, the encoder's six outputs, the final
  align-corners interpolation and sigmoid), weights carried over from PyTorch, in float64.
"""

import cv2
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from wsol_jax import boxes as boxes_lib, inference  # noqa: E402
from wsol_jax.models import WeightMapNet  # noqa: E402
from wsol_jax.models.pretrained import LAYOUTS, _torch_name  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The box rule


def _intensity_to_rgb(intensity, cmap='cubehelix', normalize=False):
    """utils.intensity_to_rgb as released."""
    assert intensity.ndim == 2, intensity.shape
    intensity = intensity.astype("float")
    if normalize:
        intensity -= intensity.min()
        intensity /= intensity.max()
    cmap = plt.get_cmap(cmap)
    intensity = cmap(intensity)[..., :3]
    return intensity.astype('float32') * 255.0


def _generate_bbox(cam, thr_val=0.1):
    """utils.generate_bbox as released, less the drawing on the image: returns
    `(estimated_bbox, thr_gray_heatmap, energy)` (the released function returns the first two and
    computes `energy`, Eq. 6, in its body)."""
    with np.errstate(invalid='ignore', divide='ignore'):  # a flat map: 0 / 0, as released
        heatmap = _intensity_to_rgb(cam, normalize=True).astype('uint8')
    gray_heatmap = cv2.cvtColor(heatmap, cv2.COLOR_RGB2GRAY)
    thr_val = thr_val * np.max(gray_heatmap)
    _, thr_gray_heatmap = cv2.threshold(gray_heatmap, int(thr_val), 255, cv2.THRESH_TOZERO)
    contours, _ = cv2.findContours(thr_gray_heatmap, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 0:
        c = max(contours, key=cv2.contourArea)
        x, y, w, h = cv2.boundingRect(c)
        estimated_bbox = [x, y, x + w, y + h]
        energy = thr_gray_heatmap[y : y + h, x : x + w].sum() / thr_gray_heatmap.sum()
    else:
        estimated_bbox = [0, 0, 1, 1]
        energy = 0
    return estimated_bbox, thr_gray_heatmap, energy


def _blob(size, cy, cx, sigma, height=1.0):
    y, x = np.mgrid[:size, :size]
    return height * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def _test_maps(size, rng):
    """`(N, size, size)` float32: noise, smooth blobs, two blobs, sigmoid-like maps, maps made of
    round values (0.1, 0.5, 0.9: some fall 1e-6 beside a colour edge), a single pixel, a constant
    and an empty map."""
    maps = [rng.random((size, size)) for _ in range(12)]  # noise: many contours
    maps += [rng.random((size, size)) ** 4 for _ in range(4)]
    for _ in range(12):  # one smooth blob
        maps.append(_blob(size, *rng.uniform(0, size, 2), rng.uniform(size / 16, size / 3)))
    for _ in range(12):  # two blobs
        a = _blob(size, *rng.uniform(0, size, 2), rng.uniform(size / 20, size / 6))
        maps.append(a + _blob(size, *rng.uniform(0, size, 2), rng.uniform(size / 20, size / 6), rng.uniform(0.1, 1)))
    for _ in range(8):  # sigmoid outputs
        logits = 12 * (_blob(size, *rng.uniform(0, size, 2), size / 6) - 0.3) + rng.normal(0, 1, (size, size))
        maps.append(1 / (1 + np.exp(-logits)))
    for _ in range(6):  # round values
        m = np.full((size, size), 0.1)
        y0, x0 = rng.integers(0, size // 2, 2)
        m[y0 : y0 + size // 3, x0 : x0 + size // 3] = 0.9
        m[rng.random((size, size)) < 0.2] = 0.5
        m[rng.random((size, size)) < 0.1] = rng.choice([0.2, 0.3, 0.6, 0.7])
        maps.append(m)
    ramp = np.tile(np.linspace(0, 1, size), (size, 1))  # every colour
    single = np.zeros((size, size))
    single[size // 3, size // 2] = 0.7
    maps += [ramp, ramp**3, single, np.full((size, size), 0.7), np.zeros((size, size))]
    return np.stack(maps).astype(np.float32)


@pytest.fixture(scope='module')
def device_rule():
    """The device path of the selection: `M_hat` under jit, S from the compiled scores."""
    return jax.jit(boxes_lib.thresholded_maps, static_argnames=('ratio', 'box_rule'))


@pytest.mark.parametrize('size, ratio', [(64, 0.1), (64, 0.3), (224, 0.1)])
def test_released_rule_equals_generate_bbox(device_rule, size, ratio):
    maps = _test_maps(size, np.random.default_rng(size + int(100 * ratio)))
    expected = [_generate_bbox(m, ratio) for m in maps]
    want_boxes = np.array([e[0] for e in expected])
    want_hat = np.stack([e[1] for e in expected]).astype(np.float32)
    want_s = np.array([e[2] for e in expected], np.float32)
    assert (want_hat[-2:] == 0).all() and (want_boxes[-2:] == [0, 0, 1, 1]).all()  # constant, empty

    host_hat = boxes_lib.thresholded_maps(maps, ratio, 'released')
    np.testing.assert_array_equal(host_hat, want_hat)
    np.testing.assert_array_equal(boxes_lib.boxes_from_maps(maps, ratio, 'released'), want_boxes)

    hat = np.asarray(device_rule(jnp.asarray(maps), ratio=ratio, box_rule='released'))
    np.testing.assert_array_equal(hat, want_hat)
    boxes = boxes_lib.boxes_from_thresholded(hat, 'released')
    np.testing.assert_array_equal(boxes, want_boxes)
    # S (Eq. 6) from the scores the selection uses: sums of integer grey levels are exact in float32
    # (255 x 224^2 < 2^24), so S is the released energy rounded once to float32.
    np.testing.assert_array_equal(inference.map_scores(jnp.asarray(maps), hat, boxes, 1.0)['S_raw'], want_s)


def test_released_rule_keeps_from_26_of_256_not_from_a_tenth():
    """Hand-computed: normalised values 0.1005 and 0.1012 are >= 0.1 (the `normalized` rule keeps
    them) but fall in cubehelix colour 25, whose grey level 25 is not above int(0.1 x 255) = 25;
    0.1016 (colour 26, grey 26) is kept by both."""
    m = np.zeros((1, 40, 40), np.float32)
    m[0, 2:6, 2:6] = 1.0  # the maximum, a small blob
    m[0, 10:30, 5:35] = 0.1005  # a large region just above a tenth
    m[0, 32:38, 10:20] = 0.1012
    np.testing.assert_array_equal(boxes_lib.boxes_from_maps(m), [[5, 10, 35, 30]])
    np.testing.assert_array_equal(boxes_lib.boxes_from_maps(m, box_rule='released'), [[2, 2, 6, 6]])
    assert boxes_lib.released_grey_levels()[[25, 26]].tolist() == [25, 26]
    m[0, 10:30, 5:35] = 0.1016
    np.testing.assert_array_equal(boxes_lib.boxes_from_maps(m, box_rule='released'), [[5, 10, 35, 30]])


def _float64_colour_index(maps):
    """matplotlib's colour index of generate_bbox's normalised map, in float64 as released."""
    m = maps.astype(np.float64)
    v = (m - m.min(axis=(1, 2), keepdims=True)) / (
        m.max(axis=(1, 2), keepdims=True) - m.min(axis=(1, 2), keepdims=True)
    )
    return np.minimum(np.floor(v * 256), 255).astype(np.int32)


def test_device_colour_index_is_exact_at_every_colour_edge():
    """float32 on the device, float64 in the released code: equal on the float32 neighbours of
    all 257 colour edges of several value ranges, where a plain float32 quotient is off by one
    colour (it is for some of these values: the check below would catch a naive version)."""
    maps = []
    for lo, hi in [(0.0, 1.0), (0.1, 0.9), (0.013, 0.77), (1e-3, 0.999), (-3.7, 11.2), (0.2, 0.2000123), (0.5, 0.75)]:
        lo, hi = np.float32(lo), np.float32(hi)
        edges = (np.float64(lo) + np.arange(257) / 256 * (np.float64(hi) - np.float64(lo))).astype(np.float32)
        up, down = np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf))
        values = np.clip(np.concatenate([edges, up, down, np.nextafter(up, np.float32(np.inf))]), lo, hi)
        maps.append(np.concatenate([[lo, hi], values, np.full(32 * 33 - 2 - values.size, hi)]).reshape(32, 33))
    maps = np.stack(maps).astype(np.float32)
    want = _float64_colour_index(maps)
    got = np.asarray(jax.jit(boxes_lib.released_colour_index)(jnp.asarray(maps)))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(boxes_lib.released_colour_index(maps), want)
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    naive = np.minimum(np.floor((maps - lo) / (hi - lo) * np.float32(256)), 255)  # float32 throughout
    assert (naive != want).sum() > 0
    with jax.enable_x64(True):  # float64 arrays on the device take the released arithmetic as it is
        np.testing.assert_array_equal(np.asarray(boxes_lib.released_colour_index(jnp.asarray(maps, jnp.float64))), want)


def test_grey_levels_are_the_released_colours():
    """The look-up table against matplotlib + OpenCV at one value inside each colour, and the
    colormap's bad colour (a flat map) black."""
    values = (np.arange(256) + 0.25) / 256
    grey = cv2.cvtColor(_intensity_to_rgb(values[None]).astype('uint8'), cv2.COLOR_RGB2GRAY)[0]
    levels = boxes_lib.released_grey_levels()
    np.testing.assert_array_equal(levels[:256], grey)
    assert levels[256] == 0 and levels.dtype == np.uint8 and levels[255] == 255


def test_reports_name_the_released_rule():
    """results.md's protocol and the exported localiser's manifest say which rule made the boxes."""
    from helpers import tiny_synthetic
    from wsol_jax import config as config_lib, report
    from wsol_jax.localizer import make_spec

    c = tiny_synthetic('method1')
    c.eval.box_rule = 'released'
    config_lib.validate(c)  # a valid value of eval.box_rule
    text = '\n'.join(report.protocol(c))
    assert 'box rule "released"' in text and 'cubehelix' in text and 'int(ratio x max grey)' in text
    spec = make_spec(c, ['a', 'b'], {'selected_step': 3, 'selected_epoch': 1, 'last_epoch': 2})
    assert spec['box_rule'] == 'released' and spec['box'].startswith('the released generate_bbox')


# ---------------------------------------------------------------------------------------------
# g against the released PyTorch modules

torch = pytest.importorskip('torch')
tnn, F = torch.nn, torch.nn.functional
from test_pretrained import SPECS, TResNet  # noqa: E402  (torchvision's ResNet layout, written out)


class TSkipUpBlock(tnn.Module):
    """base.SkipUpBlock (kernel 3, drop 0: its Dropout2d(0) layers are identities)."""

    def __init__(self, in_channels, out_channels, func):
        super().__init__()
        self.Upsample = tnn.Upsample(scale_factor=2, mode='bilinear')
        self.conv1 = tnn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.conv2 = tnn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.BN1 = tnn.BatchNorm2d(out_channels)
        self.BN2 = tnn.BatchNorm2d(out_channels)  # created in up5 too, never called there
        self.func = func

    def forward(self, x_in, skip, flag=True):
        if flag:
            x_in = self.Upsample(x_in)
        x = torch.cat((x_in, skip), 1)
        x = F.relu(self.BN1(self.conv1(x)))
        x = self.conv2(x)
        if self.func == 'None':
            return x
        return F.relu(self.BN2(x))  # func == 'relu', the only other one SkipDecoder uses


class TBottleneckBlock(tnn.Module):
    """base.BottleneckBlock (drop 0)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.BN1 = tnn.BatchNorm2d(out_channels)
        self.conv2 = tnn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.BN2 = tnn.BatchNorm2d(out_channels)

    def forward(self, x_in):
        return F.relu(self.BN2(self.conv2(F.relu(self.BN1(self.conv1(x_in))))))


class TSkipDecoder(tnn.Module):
    """base.SkipDecoder."""

    def __init__(self, full_features, out_channel, out_size):
        super().__init__()
        ff = full_features
        self.bottleneck = TBottleneckBlock(ff[4], ff[4])
        self.up1 = TSkipUpBlock(ff[4] + ff[3], ff[3], func='relu')
        self.up2 = TSkipUpBlock(ff[3] + ff[2], ff[2], func='relu')
        self.up3 = TSkipUpBlock(ff[2] + ff[1], ff[1], func='relu')
        self.up4 = TSkipUpBlock(ff[1] + ff[0], ff[0], func='relu')
        self.up5 = TSkipUpBlock(ff[0] + ff[0], out_channel, func='None')
        self.out_size = out_size

    def forward(self, z):
        zz = self.bottleneck(z[5])
        zz = self.up1(zz, z[4])
        zz = self.up2(zz, z[3])
        zz = self.up3(zz, z[2])
        zz = self.up4(zz, z[1], False)
        logits = self.up5(zz, z[0])
        return F.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=True)


class TEncoder(tnn.Module):
    """resnet.ResNet: torchvision's ResNet-18 (`Org_model`), its six feature maps."""

    def __init__(self, width):
        super().__init__()
        self.Org_model = TResNet(*SPECS['resnet18'], width=width)

    def forward(self, x):
        m = self.Org_model
        x = torch.relu(m.bn1(m.conv1(x)))
        x1 = m.maxpool(x)
        x2 = m.layer1(x1)
        x3 = m.layer2(x2)
        x4 = m.layer3(x3)
        return x, x1, x2, x3, x4, m.layer4(x4)


class TModel(tnn.Module):
    """model.Model with the ResNet backbone: `sigmoid(D(E(a)))`."""

    def __init__(self, full_features, size, width):
        super().__init__()
        self.E = TEncoder(width)
        self.D = TSkipDecoder(full_features, out_channel=1, out_size=(size, size))

    def forward(self, a):
        return torch.sigmoid(self.D(self.E(a)))


def _decoder_torch_name(keys):
    """('up1', 'bn1', 'scale') -> 'D.up1.BN1.weight'; ('bottleneck_conv2', 'kernel') -> 'D.bottleneck.conv2.weight'."""
    *modules, leaf = keys
    modules = [m.replace('bottleneck_', 'bottleneck.').replace('bn', 'BN') for m in modules]
    leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}[leaf]
    return 'D.' + '.'.join(modules + [leaf])


def _torch_name_of(keys, collection):
    if keys[0] == 'encoder':
        return 'E.Org_model.' + _torch_name(keys[1:], LAYOUTS['resnet'])
    return _decoder_torch_name(keys[1:])


def _flax_variables(model, state_dict, abstract):
    """The torch weights in `model`'s (abstract) variable tree: OIHW -> HWIO, float64."""
    used = set()

    def leaf(collection, path, spec):
        name = _torch_name_of(tuple(p.key for p in path), collection)
        used.add(name)
        value = state_dict[name].detach().numpy().copy()  # not a view: torch updates its buffers in place
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        assert value.shape == spec.shape, name
        return jnp.asarray(value, jnp.float64)

    out = {
        c: jax.tree_util.tree_map_with_path(lambda p, s, c=c: leaf(c, p, s), abstract[c])
        for c in ('params', 'batch_stats')
    }
    left = {k for k in state_dict if k not in used and not k.endswith('num_batches_tracked')}
    # Only torch's unused tensors are left over: the classifier and up5's never-called BN2.
    assert left == {
        'E.Org_model.fc.weight',
        'E.Org_model.fc.bias',
        'D.up5.BN2.weight',
        'D.up5.BN2.bias',
        'D.up5.BN2.running_mean',
        'D.up5.BN2.running_var',
    }, left
    return out


def _torch_buffers(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items() if 'running' in k}


WIDTH = 1.0  # torchvision's ResNet-18, the released model itself
SIZE = 64


def _released_full_features(width):
    """resnet.ResNet's `full_features` ([64, 64, 128, 256, 512] for ResNet-18): the widths of the
    stem and of layer1..4 (the max-pool output, the fourth skip, has the stem's width)."""
    from wsol_jax.models.resnet import stage_channels

    stem, pool, *layers = stage_channels('resnet18', width)
    assert pool == stem
    return [stem] + layers


def test_released_full_features():
    assert _released_full_features(1.0) == [64, 64, 128, 256, 512]


@pytest.fixture(scope='module')
def released_model():
    """The released g in PyTorch, float64, random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = TModel(_released_full_features(WIDTH), SIZE, WIDTH).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def test_g_equals_the_released_pytorch_model_in_float64(released_model):
    """Eval mode, and train mode (outputs and every updated running statistic), both sides in
    float64, weights carried over from PyTorch.

    Tolerance from first principles: float64's unit roundoff is u = 2^-53 = 1.1e-16. A dot
    product of K terms errs by at most K u times the sum of its terms' magnitudes; the largest
    fan-in here is up1.conv1's 3 x 3 x (512 + 256) = 6912, and the input reaches the output
    through about L = 30 layers (20 convolutions in ResNet-18, 12 in the decoder, most followed by
    a BatchNorm that keeps activations O(1)). Worst case L K u = 2.3e-11 relative to activations
    of a few units; the sigmoid's slope is at most 1/4. 1e-9 (absolute on the map, relative on
    the running statistics) is well above that bound and 10^6 below the 0.2 % differences of
    float32 or of the other running-variance convention that it must catch."""
    model, x = released_model, np.random.default_rng(0).normal(size=(4, SIZE, SIZE, 3))
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    with jax.enable_x64(True):
        g = WeightMapNet('resnet18', width=WIDTH, dtype=jnp.float64)
        abstract = jax.eval_shape(g.init, jax.random.key(0), jax.ShapeDtypeStruct(x.shape, jnp.float64))
        variables = _flax_variables(g, model.state_dict(), abstract)
        xj = jnp.asarray(x, jnp.float64)
        model.eval()
        with torch.no_grad():
            want = model(tx)[:, 0].numpy()
        got = np.asarray(jax.jit(lambda v, x: g.apply(v, x, train=False))(variables, xj))
        assert got.dtype == np.float64 and got.shape == want.shape
        eval_diff = float(np.abs(got - want).max())

        model.train()
        before = _torch_buffers(model)
        with torch.no_grad():
            want = model(tx)[:, 0].numpy()
        after = _torch_buffers(model)
        got, updates = jax.jit(lambda v, x: g.apply(v, x, train=True, mutable=['batch_stats']))(variables, xj)
        train_diff = float(np.abs(np.asarray(got) - want).max())
        stats_diff, moved = 0.0, []
        for path, value in jax.tree_util.tree_flatten_with_path(updates['batch_stats'])[0]:
            name = _torch_name_of(tuple(p.key for p in path), 'batch_stats')
            ref = after[name]
            stats_diff = max(stats_diff, float(np.max(np.abs(np.asarray(value) - ref) / np.maximum(np.abs(ref), 1.0))))
            moved.append(np.abs(ref - before[name]).min() > 0)
    print(
        f'g vs the released PyTorch g (float64, ResNet-18 width {WIDTH:g}, {SIZE} px, batch 4): max |diff| '
        f'eval {eval_diff:.1e}, train {train_diff:.1e}; running statistics after one step (relative) {stats_diff:.1e}'
    )
    assert len(moved) == 2 * 31 and all(moved)  # 20 BatchNorms in ResNet-18, 11 in the decoder; all updated
    assert eval_diff < 1e-9 and train_diff < 1e-9 and stats_diff < 1e-9
