"""OpenImages30k as clovaai/wsolevaluation defines it (Choe et al., 2020): 100 classes, 29,819
training images with labels, `val` (train-fullsup, 2,500 images with masks) drives the selection
of g's epoch, `test` (5,000 images) with instance masks and ignore regions; PxAP is the metric
(ignored pixels are skipped, as in wsolevaluation).

    python main.py --config=configs/openimages.py:method1 \
        --config.data.root=/data/wsolevaluation/dataset/OpenImages \
        --config.data.metadata_dir=/data/wsolevaluation/metadata/OpenImages \
        --config.f.pretrained=/weights/resnet50-0676ba61.pth \
        --config.g.pretrained=/weights/resnet50-0676ba61.pth --workdir=runs/openimages_m1

The paper gives no settings for this set. ResNet-50 for f and g, as wsolevaluation's ResNet
tables; the paper's fine-grained recipes kept per step rather than per epoch (29,819 training
images are 5x CUB's 5,994): f 40 epochs (about the paper's 75k steps at batch 16), /10 every 16;
g 20 epochs at batch 128 (about the paper's 4.7k steps on CUB). Everything else is the paper's.
"""

from wsol_jax.config import base_config, optimizer


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.require_pretrained = True  # ImageNet weights; f/g.pretrained=none: from scratch on purpose
    c.data.update(dict(source='wsolevaluation', num_classes=100, image_size=256, crop_size=224, val_split='val'))
    c.f.update(dict(arch='resnet50', max_epochs=40))
    c.f.optimizer = optimizer(1e-3, 1e-4, decay_every=16)
    c.g.update(dict(depth='resnet50', batch_size=128, max_epochs=20))
    return c
