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
    python main.py --config=configs/custom.py:method1,small,pretrained \
        --config.f.pretrained=resnet18-f37072fd.pth --config.g.pretrained=resnet18-f37072fd.pth ...

The number of classes is read from the data; without a val/ folder use
--config.data.val_split=holdout --config.data.num_val=N.

`small`: a preset for a CPU and a few thousand photographs: 80 px images with random 64 px crops,
the CPU recipe that the synthetic benchmark uses too (`wsol_jax.recipes.from_scratch`:
quarter-width ResNet-18s from scratch, budgets that stop when the validation scores do), and a
recipe for objects that vary within a class (`wsol_jax.recipes.varied_objects`: f a ResNet-18
with the stem for small images, AdamW, label smoothing, scale and colour jitter, at least 120k
training examples before its patience may stop it; g's lambda 4).
Classes that a mirror image changes (letters, digits): add --config.data.flip=False.

`pretrained`: the paper's path: f and g are full-width ResNet-18s that start from ImageNet
weights (torchvision's resnet18-f37072fd.pth, from
https://download.pytorch.org/models/resnet18-f37072fd.pth, for both `f.pretrained` and
`g.pretrained`; the start-up check names the file if one is missing). With `small`, at the
preset's 80/64 px and budgets, f is fine-tuned at the paper's rate (SGD 1e-3) instead of the
from-scratch rate: what to try when f from scratch stays near chance on few or varied images.
"""

from wsol_jax.config import base_config, optimizer
from wsol_jax.recipes import from_scratch, varied_objects
from wsol_jax.errors import ConfigError

PRESETS = ('small', 'pretrained')


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
        varied_objects(c)
        c.data.update(dict(image_size=80, crop_size=64))
        c.eval.batch_size = 128
    if 'pretrained' in presets:
        c.require_pretrained = True  # validate names the files until both are given
        c.f.update(dict(arch='resnet18', width=1.0, pretrained=''))  # the stem of the ImageNet file
        c.g.update(dict(width=1.0, pretrained=''))
        if 'small' in presets:
            # Fine-tuning ImageNet features, not learning them: the paper's SGD rate for f, with the
            # recipe's cosine decay and warm-up (Adam at 2e-3 is a rate for a network from scratch).
            c.f.optimizer = optimizer(1e-3, 1e-4, schedule='cosine', warmup_epochs=0.5)
            # ImageNet features need no long start: the patience may stop f at any time
            c.f.update(dict(min_images=0, max_epochs=30))
    return c
