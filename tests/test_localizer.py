"""The localiser (wsol_jax/localizer.py): the evaluation's boxes on whole images, boxes back in each image's own
pixels, any image mode, clear errors. (`localizer` and `test_split`: tests/conftest.py.)"""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_synthetic
from wsol_jax import boxes as boxes_lib, inference, parallel
from wsol_jax.context import Context, g_setup, restore_g
from wsol_jax.data import load_dataset
from wsol_jax.localizer import Localizer, box_to_image, to_rgb
from wsol_jax.selection import load_selection


def test_localizer_boxes_equal_the_evaluation_boxes(method1_run, localizer, test_split):
    """Crop = image size here, so the whole image is the evaluation's view: the boxes must be
    the very boxes the evaluation computes from the selected epoch."""
    workdir, _ = method1_run
    cfg = tiny_synthetic('method1')
    ctx = Context(cfg, workdir, load_dataset(cfg), parallel.make_mesh())
    g_model, g_state, _ = g_setup(ctx, abstract=True)
    g_vars = restore_g(ctx, g_state, load_selection(workdir)['selected_step'])
    maps = np.asarray(g_model.apply(g_vars, inference.center_crop(jnp.asarray(test_split.images), 32)))
    expected = boxes_lib.boxes_from_maps(maps, cfg.eval.threshold_ratio, cfg.eval.box_rule)
    out = localizer(test_split.images)
    np.testing.assert_array_equal(out.boxes, expected)
    np.testing.assert_allclose(np.stack(out.maps), maps, atol=1e-5)
    assert out.classes.shape == (len(test_split),) and np.all((out.probabilities > 0) & (out.probabilities <= 1))


def test_boxes_map_back_to_the_images_own_pixels(localizer):
    """A hand-made 97x53 image with a bright rectangle at a known place, through the whole
    predict geometry (resize to the input, box rule, contour, back to the image), with g's map
    replaced by the image's brightness so that the expected box is known exactly."""
    image = np.zeros((53, 97, 3), np.uint8)
    image[10:30, 60:90] = 255  # x 60..89, y 10..29
    fake = Localizer.__new__(Localizer)
    fake.__dict__.update(localizer.__dict__)

    def brightness(g_vars, f_vars, x):
        maps = jnp.asarray(x, jnp.float32).mean(-1) / 255.0
        return maps, boxes_lib.thresholded_maps(maps, 0.5, 'normalized'), jnp.ones((len(x), 4)) / 4

    fake._fn = brightness
    out = fake([image])
    x0, y0, x1, y1 = out.boxes[0]
    assert abs(x0 - 60) <= 2 and abs(y0 - 10) <= 2 and abs(x1 - 90) <= 2 and abs(y1 - 30) <= 2
    assert out.maps[0].shape == (53, 97)
    np.testing.assert_array_equal(box_to_image(np.array([[0, 0, 32, 32]]), 32, [97], [53]), [[0, 0, 97, 53]])


def test_images_of_any_mode_become_rgb():
    grey = np.full((5, 7), 9, np.uint8)
    assert to_rgb(grey).shape == (5, 7, 3) and to_rgb(grey[..., None]).shape == (5, 7, 3)
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 128
    rgb = to_rgb(rgba)  # over white, as a file with alpha is read: 200 * 128/255 + 255 * 127/255 = 227.4
    np.testing.assert_array_equal(rgb[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [227, 127, 127])
    np.testing.assert_array_equal(rgb[1:], 255)
    with pytest.raises(ValueError, match='uint8'):
        to_rgb(np.zeros((5, 7, 3), np.float32))


def test_one_image_instead_of_a_batch_is_a_clear_error(localizer):
    with pytest.raises(ValueError, match=r'one image of shape \(20, 30, 3\).*localizer\(\[image\]\)'):
        localizer(np.zeros((20, 30, 3), np.uint8))
