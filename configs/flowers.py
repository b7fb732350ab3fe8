"""Oxford Flowers 102 (Table 5, PxAP), the paper's Section 4 settings (as for CUB); the dataset's
own validation split (setid.mat: valid) drives the S-based selection.

    python main.py --config=configs/flowers.py:method1 --config.data.root=/data/flowers102 \
        --config.f.pretrained=... --config.g.pretrained=... --workdir=runs/flowers_m1
"""

from wsol_jax.config import base_config


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.require_pretrained = True  # ImageNet weights (Section 4); f/g.pretrained=none: from scratch
    c.data.update(dict(source='flowers', num_classes=102, image_size=256, crop_size=224, val_split='val'))
    c.g.update(dict(depth='resnet18', batch_size=128, max_epochs=100))
    return c
