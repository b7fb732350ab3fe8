"""Tiny-ImageNet (Table 3): ResNet-50, 64 px images, g for 1000 epochs with weight decay 5e-5.

    python main.py --config=configs/tiny_imagenet.py:method1 --config.data.root=/data/tiny-imagenet-200 \
        --config.f.pretrained=/weights/resnet50-0676ba61.pth --config.g.pretrained=... --workdir=runs/tiny_m1

The 64 px images are used at their own size (no 256/224 resize-and-crop; 64 is divisible by 32).
"""

from wsol_jax.config import base_config, optimizer


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.require_pretrained = True  # ImageNet weights (Section 4); f/g.pretrained=none: from scratch
    c.data.update(
        dict(source='tiny_imagenet', num_classes=200, image_size=64, crop_size=64, val_split='holdout', num_val=5000)
    )
    c.f.update(dict(arch='resnet50'))
    c.g.update(dict(depth='resnet50', batch_size=128, max_epochs=1000))
    c.g.optimizer = optimizer(1e-4, 5e-5, decay_every=10_000)
    return c
