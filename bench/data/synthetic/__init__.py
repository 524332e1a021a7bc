"""The embedded synthetic driving world (docs/method.md#synthetic-world, docs/data.md#synthetic-world): procedural
streets, a ray-cast spinning lidar and six ray-cast cameras. Entry points: :func:`generate_scene` and
:class:`SyntheticDataset`."""

from bench.data.synthetic.dataset import SyntheticDataset
from bench.data.synthetic.generate import VARIANTS, SyntheticConfig, generate_scene

__all__ = ["VARIANTS", "SyntheticConfig", "SyntheticDataset", "generate_scene"]
