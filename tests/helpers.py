"""Shared test helpers: the tiny synthetic configuration used by end-to-end tests."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str):
    """`get_config(arg)` of `configs/<name>.py`, as main.py would load it."""
    spec = importlib.util.spec_from_file_location(f'config_{name}', os.path.join(ROOT, 'configs', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny_synthetic(method: str, g_epochs: int = 3):
    """The synthetic config shrunk to seconds: 32 px, 1/8-width ResNet-18s, a few dozen images."""
    c = load_config('synthetic', method)
    c.data.update(dict(image_size=32, crop_size=32, num_train=48, num_val=16, num_test=24, num_classes=4))
    # One epoch of f on 48 images is near chance: the weak-f stop is tested on its own.
    c.f.update(dict(width=0.125, max_epochs=1, batch_size=16, embed_dim=8, allow_weak=True, patience=0))
    c.g.update(dict(width=0.125, max_epochs=g_epochs, batch_size=16, eval_every_steps=0, patience=0))
    # Three short epochs of g do not localise; the degenerate-map rule and the stop on bad maps
    # are tested on their own.
    c.eval.update(dict(batch_size=16, num_overlays=2, strip_images=2, max_coverage=1.0, max_bad_maps=1.0))
    return c
