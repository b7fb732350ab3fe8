"""The built-in synthetic benchmark (`wsol_jax/data/synthetic.py`), sized for 2 CPU cores.

    python main.py --config=configs/synthetic.py:method1 --workdir=runs/synthetic_m1

The data and the sizes are set here; the training is the CPU recipe that every from-scratch
config shares (`wsol_jax.config.from_scratch`): 64 px images without cropping, quarter-width
ResNet-18s for f and g, budgets that stop when the validation scores do.
"""
from wsol_jax.config import base_config, from_scratch


def get_config(arg: str = 'method1'):
    c = from_scratch(base_config(arg))
    c.data.update(dict(source='synthetic', image_size=64, crop_size=64, num_classes=6))
    c.data.num_train = 2000
    c.data.num_val = 256
    c.data.val_split = 'val'   # the generator makes its own validation split
    c.data.num_test = 512
    c.data.num_distractors = 3
    c.data.min_scale = 0.35
    c.data.max_scale = 0.8
    c.data.part_scale = 0.12
    c.data.body_class_signal = 1.0
    c.data.num_parts = 2            # over-localised maps break into two blobs (see synthetic.py)
    c.eval.batch_size = 128
    return c
