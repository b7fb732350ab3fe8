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

`small`: a preset for a CPU and a few thousand photographs (under 15 minutes on 2 cores for
3,000 training images): 80 px images with random 64 px crops, quarter-width ResNet-18s trained
from scratch. f gets a recipe that learns from scratch on small real data (Adam, 24 epochs,
the rate divided by 10 for the last quarter), g eight epochs at a rate that moves it visibly
within each epoch (after a one-epoch warm-up, gradients clipped), so that the selection by S has a trajectory to choose from.
"""
from wsol_jax.config import base_config, optimizer
from wsol_jax.errors import ConfigError

PRESETS = ('small',)


def get_config(arg: str = 'method1'):
    method, *presets = arg.split(',')
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f'unknown preset {unknown[0]!r} in {arg!r}; presets: {PRESETS} (e.g. custom.py:method1,small)')
    c = base_config(method)
    c.data.update(dict(source='wsolevaluation', num_classes=0, image_size=256, crop_size=224, val_split='val'))
    if 'small' in presets:
        c.data.update(dict(image_size=80, crop_size=64))
        c.f.update(dict(width=0.25, embed_dim=32, epochs=24, batch_size=32, pretrained='none'))
        c.f.optimizer = optimizer(1e-3, 5e-4, decay_every=18, name='adam')
        c.g.update(dict(width=0.25, epochs=8, batch_size=32, pretrained='none'))
        # warm-up and clipping: see configs/synthetic.py (the untrained map's first steps)
        c.g.optimizer = optimizer(0.03, 1e-5, decay_every=1000, warmup_epochs=1.0, clip_norm=1.0)
        c.eval.batch_size = 128
        if method == 'method2':
            # The Siamese f starts from the trained classifier (configs/synthetic.py says why)
            # and fine-tunes for two epochs: 24 epochs of triplets from scratch alone would take
            # about 24 minutes on 2 cores. A triplet costs g about three Method I images: 3 epochs,
            # at a rate that moves the map as far as Method I's 8 epochs at 0.03 (at 0.03, 53 % of
            # the validation maps were still one blob over the whole image after 3 epochs).
            c.f.siamese_from_classifier = True
            c.f.siamese_epochs = 2
            c.g.update(dict(epochs=3, batch_size=16))
            c.g.optimizer.learning_rate = 0.08
            c.g.optimizer.warmup_epochs = 0.25   # three epochs: see configs/synthetic.py
            # lambda = 2 (the paper: 1, never tuned). The triplet terms are in units of f's embedding
            # distances, whose scale a from-scratch Siamese f sets arbitrarily; at 1 they held the map
            # at a mean weight of 0.55 and about half of the maps at the whole image. Chosen on the
            # validation boxes: validation GT-known 0.20 -> 0.30, whole-image maps 47 % -> 33 %.
            c.g.reg_weight = 2.0
    return c
