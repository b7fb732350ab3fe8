"""Your own dataset in the clovaai/wsolevaluation metadata layout (see the README):

    <root>/metadata/{train,val,test}/image_ids.txt      path
                                    class_labels.txt    path,label
                                    image_sizes.txt     path,width,height
                                    localization.txt    path,x0,y0,x1,y1   one line per box, or
                                                        path,mask_path,ignore_path   one per object mask
                                                        (their loader takes one kind per file)
    <root>/<path>                                       the images (paths relative to root)

    python main.py --config=configs/custom.py:method1 --config.data.root=/data/mine --workdir=runs/mine
    python main.py --config=configs/custom.py:method1,small ...      # CPU preset, no ImageNet weights

The number of classes is read from the data; without a val/ folder use
--config.data.val_split=holdout --config.data.num_val=N.

`small`: a preset for a CPU and a few thousand photographs: 80 px images with random 64 px crops,
and the CPU recipe that the synthetic benchmark uses too (`wsol_jax.config.from_scratch`:
quarter-width ResNet-18s from scratch, budgets that stop when the validation scores do).
"""

from wsol_jax.config import base_config, from_scratch
from wsol_jax.errors import ConfigError

PRESETS = ('small',)


def get_config(arg: str = 'method1'):
    method, *presets = arg.split(',')
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(
            f'unknown preset {unknown[0]!r} in {arg!r}; presets: {PRESETS} (e.g. custom.py:method1,small)'
        )
    c = base_config(method)
    c.data.update(dict(source='wsolevaluation', num_classes=0, image_size=256, crop_size=224, val_split='val'))
    if 'small' in presets:
        from_scratch(c)
        c.data.update(dict(image_size=80, crop_size=64))
        c.eval.batch_size = 128
    return c
