"""Connected-component filtering of pseudo labels (BCP ``code/ACDC_BCP_train.py``
``get_ACDC_2DLargestCC``, lines 89-117): in each image, each foreground class keeps only its
largest 8-connected component; its other pixels become background. A spine unit is one blob, so
fragments far from it are noise."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

#: 8-connectivity inside each image, none across the images of a batch.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True


def largest_component_per_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, H, W] integer labels -> the same labels with every foreground class reduced to its
    largest component per image (ties: the first in raster order, as the source's arg-max).
    Background is never filtered. Runs on the CPU (scipy), one labelling per class."""
    arr = labels.detach().cpu().numpy()
    out = np.zeros_like(arr)
    for cls in range(1, num_classes):
        mask = arr == cls
        if not mask.any():
            continue
        components, _ = ndimage.label(mask, structure=_IN_PLANE)
        sizes = np.bincount(components.ravel())
        keep = []
        for image in components:
            ids = np.unique(image)
            ids = ids[ids > 0]
            if ids.size:
                keep.append(ids[np.argmax(sizes[ids])])
        out[np.isin(components, keep)] = cls
    return torch.from_numpy(out).to(labels.device)
