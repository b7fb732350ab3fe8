"""The CPU recipes: configs that train f and g from scratch on a CPU, as data on top of the
paper's `config.base_config`. `from_scratch` is the one recipe of the synthetic benchmark and the
own-data preset; `varied_objects` is what the own-data preset adds for objects that vary within a
class. How each value was chosen: docs/experiments.md."""

import ml_collections

from wsol_jax.config import optimizer


def from_scratch(c: ml_collections.ConfigDict, width: float = 0.25) -> ml_collections.ConfigDict:
    """The CPU recipe: f and g trained from scratch at a small resolution, budgets that follow the
    data. One recipe for both methods and every data set (the synthetic benchmark, the small
    real-photo sets); the config that calls it sets the data and the sizes. One reason per knob:"""
    method = c.method
    c.f.update(
        dict(
            width=width,
            embed_dim=32,
            batch_size=32,
            pretrained='none',
            max_epochs=30,  # a cap; f stops when its validation accuracy stops improving
            patience=3,
        )
    )  # epochs without a more accurate f (noise at chance rarely beats its own best for long)
    # Adam learns from scratch at one rate on every data set tried; the cosine decay lets f settle at
    # its plateau, where the patience stops it.
    c.f.optimizer = optimizer(2e-3, 1e-4, name='adam', schedule='cosine', warmup_epochs=0.5)
    c.f.blank_weight = (
        1.0 if method == 'method1' else 0.0
    )  # f never sees the blank g's zero map makes (losses.blank_loss)
    # Half of f's training images get a rectangle of the mean colour, what g's zero weights make
    # (random erasing, Zhong et al. 2020; the paper's [35] hides patches alike): f gathers evidence
    # over the whole object instead of one cue that g could keep alone (the body's stripes).
    c.f.erase_prob = 0.5
    c.f.siamese_from_classifier = True  # Method II: the start ImageNet weights give the Siamese f in the paper
    c.g.update(
        dict(
            width=width,
            batch_size=32 if method == 'method1' else 16,  # 16 triplets: 48 images a step
            pretrained='none',
            max_epochs=12,  # a cap; g stops by the selection's patience
            eval_every_steps=10,  # S every 320 images (Method I): the whole-object map can last < 25 steps
            patience=15,
        )
    )  # scores past the selected point before stopping
    # One optimiser for both methods. A quarter-epoch warm-up and clipping keep the first steps small
    # while f's cross-entropy on the untrained map is at its peak (full steps saturated g's sigmoid);
    # S scored within epochs follows the map at this rate (at 0.01 from a map of 0.9, Method I's
    # map faded uniformly for up to 9 epochs before it told object from background).
    c.g.optimizer = optimizer(0.03, 1e-5, decay_every=1000, warmup_epochs=0.25, clip_norm=1.0)
    # S, the selection and the boxes read a moving average of g's weights over about 50 steps
    # (1 / (1 - decay)): at this rate the maps of consecutive scores 10 steps apart swing by up to 15
    # points of validation GT-known, and S scored on one step's weights follows the swing
    c.g.ema_decay = 0.98
    # g starts where nearly all of f's answers survive the untrained map (train/start.py): where f
    # answers on I * 0.5 as on a blank, Eq. 1 has no gradient and the L1 term empties the map.
    c.g.start_agreement = 0.9
    return c


def varied_objects(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The own-data CPU preset (`configs/custom.py:<method>,small`) on top of `from_scratch`: a
    standard recipe for f from scratch on a few thousand photographs whose objects vary within a
    class, and g's sparsity weight for such an f. Chosen on the handwritten-digit set
    (benchmarks/make_digit_set.py), where f with `from_scratch` alone stopped at chance, and the
    photo set (docs/experiments.md). The synthetic benchmark keeps `from_scratch`: its tables were
    measured with it (f at 0.98-1.0 within 10 epochs)."""
    # Decoupled weight decay at the rate of the data-efficient vision recipes (DeiT, ConvNeXt):
    # with few images, coupled L2 at 1e-4 let f memorise its training set.
    c.f.optimizer = optimizer(2e-3, 0.05, name='adamw', schedule='cosine', warmup_epochs=0.5)
    c.f.update(
        dict(
            # The ResNet stem for small images (models.resnet): at 64 px the ImageNet stem leaves f's
            # blocks 16x16 of the crop; with it f learned the digits as well as a plain CNN whose
            # first block sees the whole crop (5,000 images: 0.887-0.900 against 0.857; 0.790 before)
            arch='resnet18_small',
            label_smoothing=0.1,  # Szegedy et al. 2016's value
            scale_jitter=0.25,  # objects of a user's photographs come at more sizes than a few thousand show
            colour_jitter=0.4,  # timm's and torchvision's usual strength; the object's shape tells the class
            # f from scratch on 2,000 varied images stays at chance for 30-50k examples before it
            # learns: the patience waits for 120k (60 epochs of 2,000 images, 6 of 20,000)
            min_images=120_000,
            max_epochs=60,
        )
    )
    # lambda (the paper: 1). Eq. 1's cross-entropy is in units of f's confidence, which an f from
    # scratch on varied objects with label smoothing keeps low (Eq. 3-4: in units of distances that
    # a Siamese f from scratch sets): at 1 its maps kept a wide halo around
    # the object and 50-60 % of them covered the whole image (digits, Method I; the photo set,
    # Method II); at 2 the halo still widened the boxes. At 4 the point that S keeps was 7-13 points
    # better on the validation boxes of both development sets, for both methods (Method I: digits
    # 54.7 against 41.7, photos 50.0 against 36.7; Method II: 43.3 against 34.3 and 36.0).
    c.g.reg_weight = 4.0
    return c
