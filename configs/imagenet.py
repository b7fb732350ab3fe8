"""ImageNet-1k as clovaai/wsolevaluation defines it (Choe et al., 2020): 1,000 classes, the
1.28 M ILSVRC2012 training images with labels, ImageNetV2 (10,000 images with boxes) drives the
selection of g's epoch, the 50,000 ILSVRC2012 validation images (several boxes each) are the
test split; MaxBoxAccV2 and Top-1/Top-5 loc are the metrics.

    python main.py --config=configs/imagenet.py:method1 \
        --config.data.root=/data/wsolevaluation/dataset/ILSVRC \
        --config.data.metadata_dir=/data/wsolevaluation/metadata/ILSVRC \
        --config.f.pretrained=/weights/resnet50-0676ba61.pth \
        --config.g.pretrained=/weights/resnet50-0676ba61.pth \
        --config.data.cache_dir=/fast_disk/wsol_cache --workdir=runs/imagenet_m1

The paper gives no settings for this set. ResNet-50 for f and g, as wsolevaluation's ResNet
tables. f starts from ImageNet weights, so it is already a classifier of these very classes:
a short fine-tune (2 epochs, 20k steps at batch 128, lr 1e-4) instead of the fine-grained
recipe's 200 epochs. g: batch 128 as the paper, 4 epochs = 40k steps (the paper's CUB run is
about 4.7k steps; ImageNet has 28x more classes to learn a map for), S scored after each.
The cache is JPEG (quality 95, `data.cache_codec`): raw uint8 at 256 px would be about 250 GB,
JPEG about 30 GB; decoding then costs host cores (README, "Input pipeline").
"""

from wsol_jax.config import base_config, optimizer


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.require_pretrained = True  # ImageNet weights; f/g.pretrained=none: from scratch on purpose
    c.data.update(
        dict(
            source='wsolevaluation',
            num_classes=1000,
            image_size=256,
            crop_size=224,
            val_split='val',
            cache_codec='jpeg',
        )
    )
    c.f.update(dict(arch='resnet50', max_epochs=2, batch_size=128))
    c.f.optimizer = optimizer(1e-4, 1e-4, decay_every=1)
    c.g.update(dict(depth='resnet50', batch_size=128, max_epochs=4))
    c.eval.batch_size = 256
    return c
