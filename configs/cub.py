"""CUB-200-2011 (Table 1, Table 4), the paper's Section 4 settings.

    python main.py --config=configs/cub.py:method1 --config.data.root=/data/CUB_200_2011 \
        --config.f.pretrained=/weights/resnet18-f37072fd.pth \
        --config.g.pretrained=/weights/resnet18-f37072fd.pth --workdir=runs/cub_m1

Use `--config.data.source=tfds --config.data.tfds_name=caltech_birds2011 --config.data.root=DATA_DIR`
for a prepared TFDS copy, or `data.source='wsolevaluation'` for clovaai/wsolevaluation metadata.
"""

from wsol_jax.config import base_config


def get_config(arg: str = 'method1'):
    c = base_config(arg)  # f: ResNet-18, SGD lr 1e-3, wd 1e-4, batch 16, 200 epochs, /10 every 80
    c.require_pretrained = True  # ImageNet weights (Section 4); f/g.pretrained=none: from scratch
    c.data.update(dict(source='cub', num_classes=200, image_size=256, crop_size=224, val_split='holdout', num_val=600))
    c.g.update(dict(depth='resnet18', batch_size=128, max_epochs=100))  # g: SGD lr 1e-4, batch 128, 100 epochs
    return c
