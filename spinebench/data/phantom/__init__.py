"""A procedural sagittal T2-weighted lumbar spine MR phantom with MRSpineSeg labels.

The phantom stands in for MRSpineSeg so that the whole benchmark runs offline, deterministically
and in seconds. It is built to be learnable but not trivial: every vertebra looks like its
neighbours, so a network must identify a level by counting from the sacrum (class identity is
positional), and the top of the field of view moves between T8 and T11 so the highest classes
are partly or wholly absent, as in the real data.

Geometry is modelled in millimetres on a sagittal (AP x SI) plane, with the lateral coordinate
of each slice deciding how much of each structure it cuts: vertebral bodies and discs are
elliptic in the axial plane, so their sagittal sections shrink laterally; the canal and the
spinous processes exist only in the central slices; pedicles and facet pillars only laterally.
Everything is vectorised with numpy (bounding boxes for per-level shapes); one 12x128x128
case takes about 0.1-0.2 s on one core.

Intensities are in arbitrary scanner-like units (a per-case gain of roughly 500-2000), so
pipelines must normalise per case just as they must for real MR.

The package's modules, one concern each:

- :mod:`~spinebench.data.phantom.anatomy`: the anatomy tables and the per-case sampler;
- :mod:`~spinebench.data.phantom.scene`: the buffers, grids and geometric primitives;
- :mod:`~spinebench.data.phantom.drawing`: the structures painted into the scene;
- :mod:`~spinebench.data.phantom.generate`: :func:`generate_case`, acquisition, the version;
- :mod:`~spinebench.data.phantom.writing`: :func:`write_dataset` (NIfTI and dataset.json);
- :mod:`~spinebench.data.phantom.montage`: :func:`save_montage` (a PNG preview).
"""

from __future__ import annotations

from spinebench.data.phantom.generate import PHANTOM_VERSION, PhantomCase, generate_case
from spinebench.data.phantom.montage import save_montage
from spinebench.data.phantom.writing import case_seed, write_dataset

__all__ = [
    "PHANTOM_VERSION",
    "PhantomCase",
    "case_seed",
    "generate_case",
    "save_montage",
    "write_dataset",
]
