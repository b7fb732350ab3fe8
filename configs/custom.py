"""Your own dataset in the clovaai/wsolevaluation metadata layout (see the README):

    <root>/metadata/{train,val,test}/image_ids.txt      path
                                    class_labels.txt    path,label
                                    image_sizes.txt     path,width,height
                                    localization.txt    path,x0,y0,x1,y1   (or path,mask_path,)
    <root>/<path>                                       the images (paths relative to root)

    python main.py --config=configs/custom.py:method1 --config.data.root=/data/mine --workdir=runs/mine

The number of classes is read from the data; without a val/ folder use
--config.data.val_split=holdout --config.data.num_val=N.
"""
from wsol_jax.config import base_config


def get_config(arg: str = 'method1'):
    c = base_config(arg)
    c.data.update(dict(source='wsolevaluation', num_classes=0, image_size=256, crop_size=224, val_split='val'))
    return c
