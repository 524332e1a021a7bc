"""The PCA of Figure 1 (geomstruct.figures.distill._pca2, scikit-learn's PCA) against an SVD written out here."""

from __future__ import annotations

import numpy as np

from geomstruct.figures.distill import _pca2


def test_pca2_is_the_projection_on_the_two_leading_directions_of_the_unit_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)) * np.linspace(3.0, 0.2, 16)  # distinct variances: a well-separated top 2
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    got = _pca2(x)
    assert got.shape == (300, 2)
    # A principal direction is defined up to its sign: compare each component up to a sign flip.
    for c in range(2):
        sign = np.sign(got[:, c] @ reference[:, c])
        np.testing.assert_allclose(got[:, c], sign * reference[:, c], atol=1e-10)
