"""Config defaults shared by every `configs/*.py`, and validation at start-up.

Configs are data (`ml_collections.ConfigDict`, locked: an unknown key fails); the dataset files
in `configs/` only change values. `validate` checks values that types alone cannot: it owns every
check of a value by itself (the names it accepts come from the module that uses the value, which
raises ValueError if it is given another); `wsol_jax.checks.check_run` owns the checks of values
against the data and the devices.
"""

from __future__ import annotations

import ml_collections

from wsol_jax import evaluators
from wsol_jax.errors import ConfigError
from wsol_jax.boxes import BOX_RULES
from wsol_jax.data.dataset import ERASE_FILLS
from wsol_jax.losses import MASK_SPACES
from wsol_jax.models.build import DTYPES
from wsol_jax.models.classifier import KINDS
from wsol_jax.models.pretrained import wants_pretrained
from wsol_jax.models.registry import ARCHS
from wsol_jax.models.resnet import RESNET_SPECS
from wsol_jax.models.weight_map import DECODERS
from wsol_jax.train.state import OPTIMIZERS, SCHEDULES

METHODS = ('method1', 'method2')  # the keys of wsol_jax.methods.METHODS (a test holds them equal)


def optimizer(
    learning_rate: float,
    weight_decay: float,
    momentum: float = 0.9,
    decay_every: int = 80,
    decay_factor: float = 0.1,
    name: str = 'sgd',
    warmup_epochs: float = 0.0,
    clip_norm: float = 0.0,
    schedule: str = 'step',
) -> ml_collections.ConfigDict:
    """`name`: sgd (momentum; weight decay added to the gradient, as PyTorch's SGD) | adam (the same
    coupled decay) | adamw (decoupled weight decay). `schedule`: step (times `decay_factor` every
    `decay_every` epochs, the paper's) | cosine (to 0 at the network's `max_epochs`).
    `warmup_epochs`: the learning rate rises linearly from 0 over that many epochs; `clip_norm` > 0:
    gradients are clipped to that global norm (0: off)."""
    return ml_collections.ConfigDict(
        dict(
            name=name,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            decay_every=decay_every,
            decay_factor=decay_factor,
            warmup_epochs=warmup_epochs,
            clip_norm=clip_norm,
            schedule=schedule,
        )
    )


def base_config(method: str) -> ml_collections.ConfigDict:
    """The paper's settings (Section 4, "Implementation details") where it gives them."""
    check_method(method)
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.dtype = 'float32'  # compute dtype; 'bfloat16' keeps float32 parameters; 'float64': numerical checks (slow)
    c.distributed = False  # call jax.distributed.initialize() (multi-host runs)
    c.cpu_devices = 0  # CPU runs from the CLI: data-parallel devices (0: one per core that divides the batches)
    c.overwrite = False  # retrain a stage whose checkpoints were made with other settings
    c.require_pretrained = False  # the paper's datasets: f.pretrained and g.pretrained must be given
    c.data = ml_collections.ConfigDict(
        dict(
            source='synthetic',  # synthetic | cub | cars | flowers | tiny_imagenet | wsolevaluation | tfds
            root='',  # the unpacked dataset (TFDS: its data_dir)
            metadata_dir='',  # wsolevaluation: default <root>/metadata
            tfds_name='',  # tfds: caltech_birds2011 | cars196 | oxford_flowers102
            cache_dir='',  # the decoded record cache (records.py); default <workdir>/data_cache
            cache_codec='raw',  # raw: exact uint8 | jpeg: quality 95, ~8x smaller (ImageNet scale)
            read_threads=0,  # threads that read and decode batches (Grain); 0: one per core
            image_size=256,
            crop_size=224,
            num_classes=0,  # 0: read from the data
            val_split='holdout',  # holdout: num_val images held out of train | val: the dataset's own
            num_val=500,
            # horizontal flips of training images (f and g); False where mirroring changes the class
            # or makes none (letters, digits)
            flip=True,
            on_bad_sample='error',
        )
    )  # error | skip (missing or corrupt files)
    c.f = ml_collections.ConfigDict(
        dict(
            arch='resnet18',  # any of wsol_jax.models.registry.ARCHS (ResNets, ViTs, ConvNeXt); the paper: resnet18
            kind='classifier',  # what g compares: classifier (f's class distribution, Eq. 1; Method II: the
            # Siamese f) | encoder (f's pooled features: f as a black box, Section 5)
            train=True,  # False: f is the encoder in f.pretrained, used as it is (no train_f, no labels for g)
            width=1.0,
            embed_dim=200,
            margin=1.0,
            batch_size=16,
            max_epochs=200,  # the budget's cap (the paper: 200 epochs)
            patience=0,  # stop after this many validation scores without a more accurate f; 0: max_epochs
            # the patience stops f only after this many training examples (steps x batch; 0: any time);
            # not the Siamese f that starts from the classifier
            min_images=0,
            eval_every_steps=0,  # steps between validation scores (accuracy); 0: once an epoch
            pretrained='',  # ImageNet weights (.pth / .safetensors); 'none': from scratch on purpose
            allow_weak=False,  # continue to train_g although f is below min_accuracy_over_chance
            min_accuracy_over_chance=2.0,
            erase_prob=0.0,  # random erasing while training f (0: off, the paper)
            erase_fill='mean',  # what fills an erased rectangle: 'mean' (colour) or 'noise' (dataset.random_erase)
            label_smoothing=0.0,  # of f's cross-entropy targets (0: the paper)
            scale_jitter=0.0,  # f's training crops zoomed by [1/(1+s), 1+s] (dataset.augment; 0: the paper)
            colour_jitter=0.0,  # f's brightness, contrast, saturation scaled by [1-c, 1+c] (0: off, the paper)
            # weight of "a blank image is of no class" (losses.blank_loss; Siamese f: blank as negative; 0: the paper)
            blank_weight=0.0,
            siamese_from_classifier=False,  # Method II: the Siamese f starts from the trained classifier's backbone
            optimizer=optimizer(1e-3, 1e-4, decay_every=80),
        )
    )
    c.g = ml_collections.ConfigDict(
        dict(
            depth='resnet18',
            width=1.0,
            batch_size=128,
            max_epochs=100,  # the budget's cap (the paper: 100 epochs, S scored after each)
            patience=0,  # stop once mean S has not come back within the selection's tolerance of its
            # best for this many scores; 0: train max_epochs
            eval_every_steps=0,  # steps between scores of S on the validation split; 0: once an epoch (the paper)
            decoder='released',  # released: the authors' SkipDecoder | paper: the paper text's decoder
            decoder_channels=(256, 128, 64, 32, 16),
            initial_weight=0.5,  # the untrained map (bias of the last layer); 0.5: the released code
            # > 0: raise the untrained map from initial_weight until f's answers on the dimmed training
            # images agree with its answers on the images for this share of them (train/start.py); 0: the paper
            start_agreement=0.0,
            pretrained='',
            optimizer=optimizer(1e-4, 1e-4, decay_every=1000),
            # > 0: S, the selection and the boxes use an exponential moving average of g's weights with
            # this decay per step (Polyak averaging), not the weights of the last step; 0: the paper
            ema_decay=0.0,
            reg_weight=1.0,
            inner_weight=1.0,
            outer_weight=1.0,
            margin=1.0,
            mask_space='normalized',
            keep_all_checkpoints=False,
        )
    )  # default: only the selected and the latest checkpoint stay on disk
    c.eval = ml_collections.ConfigDict(
        dict(
            batch_size=64,
            # normalized: min-max rescale, Eq. 5 | literal: the raw map | released: generate_bbox
            box_rule='normalized',
            # exactly (cubehelix grey levels; boxes.py)
            threshold_ratio=0.1,  # Eq. 5: tau = ratio * max
            max_coverage=0.95,  # a map whose box covers more of the image than this is degenerate (S = 0)
            # keep the latest scored point within this many standard errors of the best mean S; 0: the maximum
            selection_se=1.0,
            # stop (after the report) if more validation maps than this are degenerate or collapsed; 1: never
            max_bad_maps=0.5,
            pxap_interval=0.01,
            maxboxacc_ious=(30, 50, 70),
            top_k=5,  # Top-k cls / Top-k loc beside Top-1
            num_workers=0,  # processes for the contour work of MaxBoxAcc; 0: one per core, 1: in-line
            # the rows of the test table in order, by name (wsol_jax.evaluators.EVALUATORS)
            evaluators=evaluators.DEFAULT,
            # test maps for clovaai/wsolevaluation (<workdir>/scoremaps), with its metadata and masks, and their row
            save_maps=False,
            num_overlays=8,
            strip_images=4,
        )
    )
    c.predict = ml_collections.ConfigDict(
        dict(
            images='',  # --stage=predict: a folder (recursive), a glob, or a .txt of paths
            model='',  # an export folder (--stage=export); default: the workdir's selected epoch
            out='',  # default <workdir>/predictions
            save_npy=False,  # also write each map as .npy (float32, the image's own resolution)
            batch_size=32,
        )
    )
    c.export = ml_collections.ConfigDict(dict(dir=''))  # default <workdir>/export
    return c


def check_method(method: str) -> None:
    """The one check of a method's name, wherever it arrives: the config file's argument
    (`base_config`), `config.method` after the overrides (`validate_training`) and the methods
    table's lookup (`methods.get`)."""
    if method not in METHODS:
        raise ConfigError(
            f'the config argument must be one of {METHODS} (configs/<name>.py:<method>, or --config.method), '
            f'got {method!r}'
        )


def validate(config) -> None:
    """Raise `ConfigError` naming the key for values that cannot work."""
    validate_training(config)
    from wsol_jax.data import check_source

    check_source(config)
    if config.require_pretrained:
        for net in ('f', 'g'):
            if not config[net].pretrained:
                arch = config.f.arch if net == 'f' else config.g.depth
                raise ConfigError(
                    f'config.{net}.pretrained: is empty, but this config reproduces the paper only from ImageNet '
                    f'weights: download {PRETRAINED_FILES.get(arch, "the torchvision weights")} '
                    f'and pass --config.{net}.pretrained=PATH, or --config.{net}.pretrained=none to train from '
                    'scratch on purpose'
                )


def validate_training(config) -> None:
    """The values of the networks, their training and the evaluation (no data source): what
    `fit_weight_map` needs too."""

    def need(ok, key, msg):
        if not ok:
            raise ConfigError(f'config.{key}: {msg}')

    check_method(config.method)
    need(config.dtype in DTYPES, 'dtype', f'must be one of {DTYPES}, got {config.dtype!r}')
    need(config.f.arch in ARCHS, 'f.arch', f'must be one of {", ".join(ARCHS)}, got {config.f.arch!r}')
    need(config.g.depth in RESNET_SPECS, 'g.depth', f'must be one of {sorted(RESNET_SPECS)} (g is a ResNet U-Net)')
    need(config.f.kind in KINDS, 'f.kind', f'must be one of {KINDS}, got {config.f.kind!r}')
    if not config.f.train:
        need(
            config.f.kind == 'encoder',
            'f.train',
            'False uses f.pretrained as an encoder: set --config.f.kind=encoder '
            '(a classifier f from a file would need a class head for this data set)',
        )
        need(
            wants_pretrained(config.f.pretrained),
            'f.pretrained',
            'must name the weight file of the encoder when f.train=False',
        )
    patch = ARCHS[config.f.arch].options.get('patch_size')
    need(
        not patch or config.data.crop_size % patch == 0,
        'data.crop_size',
        f'must be divisible by the patch size {patch} of f.arch={config.f.arch}',
    )
    for net in ('f', 'g'):
        need(config[net].width > 0, f'{net}.width', 'must be positive')
        need(config[net].max_epochs >= 1, f'{net}.max_epochs', 'must be at least 1')
        need(config[net].patience >= 0, f'{net}.patience', 'must be >= 0 (0: train max_epochs)')
        need(config[net].eval_every_steps >= 0, f'{net}.eval_every_steps', 'must be >= 0 (0: once an epoch)')
        need(config[net].batch_size >= 1, f'{net}.batch_size', 'must be at least 1')
        need(config[net].optimizer.name in OPTIMIZERS, f'{net}.optimizer.name', f'must be one of {OPTIMIZERS}')
        need(config[net].optimizer.schedule in SCHEDULES, f'{net}.optimizer.schedule', f'must be one of {SCHEDULES}')
    need(config.f.min_images >= 0, 'f.min_images', 'must be >= 0 (0: the patience may stop f at any time)')
    need(config.g.mask_space in MASK_SPACES, 'g.mask_space', f'must be one of {MASK_SPACES}')
    need(config.g.decoder in DECODERS, 'g.decoder', f'must be one of {DECODERS}, got {config.g.decoder!r}')
    need(
        config.eval.box_rule in BOX_RULES, 'eval.box_rule', f'must be one of {BOX_RULES}, got {config.eval.box_rule!r}'
    )
    listed = tuple(config.eval.evaluators)
    need(
        listed and set(listed) <= set(evaluators.EVALUATORS) - {evaluators.SCOREMAPS},
        'eval.evaluators',
        f'must name one or more of {tuple(n for n in evaluators.EVALUATORS if n != evaluators.SCOREMAPS)} '
        f'(eval.save_maps=True adds {evaluators.SCOREMAPS}), got {listed!r}',
    )
    for key in ('batch_size', 'num_overlays', 'strip_images', 'top_k'):
        need(config.eval[key] >= 1, f'eval.{key}', 'must be at least 1')
    need(config.eval.num_workers >= 0, 'eval.num_workers', 'must be >= 0 (0: one per core)')
    need(config.predict.batch_size >= 1, 'predict.batch_size', 'must be at least 1')
    need(config.cpu_devices >= 0, 'cpu_devices', 'must be >= 0 (0: one per core that divides the batch sizes)')
    need(0 <= config.eval.max_bad_maps <= 1, 'eval.max_bad_maps', 'must be in [0, 1] (1 switches the stop off)')
    need(config.eval.selection_se >= 0, 'eval.selection_se', 'must be >= 0 (0: the epoch of the highest mean S)')
    need(0 < config.eval.max_coverage <= 1, 'eval.max_coverage', 'must be in (0, 1] (1 switches the rule off)')
    need(0 < config.g.initial_weight < 1, 'g.initial_weight', 'must be in (0, 1)')
    need(0 <= config.g.start_agreement <= 1, 'g.start_agreement', 'must be in [0, 1] (0: g starts at initial_weight)')
    need(0 <= config.g.ema_decay < 1, 'g.ema_decay', 'must be in [0, 1) (0: no moving average, the paper)')
    need(config.f.blank_weight >= 0, 'f.blank_weight', 'must be >= 0 (0: off)')
    fill = config.f.erase_fill
    need(fill in ERASE_FILLS, 'f.erase_fill', f'must be one of {ERASE_FILLS}, got {fill!r}')
    need(0 <= config.f.label_smoothing < 1, 'f.label_smoothing', 'must be in [0, 1) (0: off)')
    need(config.f.scale_jitter >= 0, 'f.scale_jitter', 'must be >= 0 (0: off)')
    need(0 <= config.f.colour_jitter < 1, 'f.colour_jitter', 'must be in [0, 1) (0: off)')
    need(config.f.min_accuracy_over_chance >= 0, 'f.min_accuracy_over_chance', 'must be >= 0')
    need(len(config.g.decoder_channels) == 5, 'g.decoder_channels', 'needs five widths (five upsampling blocks)')
    crop, size = config.data.crop_size, config.data.image_size
    need(crop % 32 == 0, 'data.crop_size', f'must be divisible by 32 (g downscales 32x), got {crop}')
    need(crop <= size, 'data.crop_size', f'must not exceed data.image_size={size}')
    need(0 < config.eval.threshold_ratio < 1, 'eval.threshold_ratio', 'must be in (0, 1)')


PRETRAINED_FILES = {
    'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
    'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
    'resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    'resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
}
