"""Stanford Cars (Table 2), the paper's Section 4 settings (as for CUB).

    python main.py --config=configs/cars.py:method1 --config.data.root=/data/stanford_cars \
        --config.f.pretrained=/weights/resnet18-f37072fd.pth --config.g.pretrained=... --workdir=runs/cars_m1
"""

from wsol_jax.config import base_config


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.require_pretrained = True  # ImageNet weights (Section 4); f/g.pretrained=none: from scratch
    c.data.update(dict(source='cars', num_classes=196, image_size=256, crop_size=224, val_split='holdout', num_val=800))
    c.g.update(dict(depth='resnet18', batch_size=128, max_epochs=100))
    return c
