"""The data wing: datasets as one :class:`~bench.data.scan.Scan` record for nuScenes, SemanticKITTI and the synthetic
world, and the path from their files to a training batch (docs/data.md).

- :mod:`bench.data.registry`: dataset name -> reader (each with its classes and zero-shot vocabulary), open a split;
- readers: :mod:`bench.data.nuscenes`, :mod:`bench.data.semantickitti`, :mod:`bench.data.synthetic` (on
  :mod:`bench.data.base`, :mod:`bench.data.scan`, :mod:`bench.data.io`, :mod:`bench.data.classes`); the 1% subsets
  :mod:`bench.data.fewshot` (their files: :mod:`bench.data.split_files`);
- :mod:`bench.data.scene` (a scan as the harness reads it, batches), :mod:`bench.data.loader` (Dataset, samplers,
  DataLoader), :mod:`bench.data.augment` (SLidR's augmentations);
- the caches: :mod:`bench.data.features` (teacher features) and :mod:`bench.data.superpixels`, written with the one
  atomic writer of :mod:`bench.files`.

The wing imports nothing of the rest of ``bench`` but the shared :mod:`bench.files` and :mod:`bench.distributed`
(``tests/project/test_layering.py``).
"""

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
from bench.data.scan import CameraCalibration, CameraView, Projection, Scan, project_points

__all__ = [
    "IGNORE_INDEX",
    "NUSCENES_CLASSES",
    "SEMANTICKITTI_CLASSES",
    "CameraCalibration",
    "CameraView",
    "Projection",
    "Scan",
    "project_points",
]
