"""The conventions of ground truth, shared by the data sources, the metrics and the evaluators.

Boxes are `[x0, y0, x1, y1]` in pixels; an image may have several, so ground truth is `(N, K, 4)`
with unused rows filled with `PAD_BOX`. Masks are uint8: 0 background, 1 object, `IGNORE` for
pixels PxAP skips (OpenImages' ignore regions, as wsolevaluation).
"""

from __future__ import annotations

import numpy as np

PAD_BOX = (-1, -1, -1, -1)
IGNORE = 255


def valid_boxes(gt_boxes) -> np.ndarray:
    """`(N, K)` bool: which rows of `(N, K, 4)` ground truth are real boxes (not `PAD_BOX`)."""
    return np.asarray(gt_boxes)[..., 0] >= 0
