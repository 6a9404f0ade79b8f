"""The three-arm spiral ("Swiss roll") data set of the paper, bit-compatible with the authors'.

Class j, point k = 0..N−1: r = k/(N−1), θ = 2πj/C + revolutions·π·k/(N−1) + noise·ε with
ε ~ N(0, 1) drawn by the legacy NumPy generator ``RandomState(seed).randn(N)`` once per class in
class order; x = (r cos θ, r sin θ). Every class has a point at the origin.
"""

from __future__ import annotations

import numpy as np


def spiral(points_per_class=100, n_classes=3, revolutions=4, noise=0.2, seed=0):
    """Returns ``(x_Px2, y_PxC)`` as float64 NumPy arrays, P = points_per_class · n_classes.

    The training set of the paper is ``seed=0``; the validation set here is ``seed=1``.
    """
    if points_per_class < 2:
        raise ValueError(f"points_per_class must be >= 2, got {points_per_class}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    rng = np.random.RandomState(seed)
    n = points_per_class
    x = np.zeros((n * n_classes, 2))
    y = np.zeros((n * n_classes, n_classes))
    r = np.linspace(0.0, 1.0, n)
    for j in range(n_classes):
        start = 2 * np.pi * j / n_classes
        theta = np.linspace(start, start + revolutions * np.pi, n) + rng.randn(n) * noise
        x[n * j : n * (j + 1)] = np.c_[r * np.cos(theta), r * np.sin(theta)]
        y[n * j : n * (j + 1), j] = 1.0
    return x, y


def check_data(x, y_onehot):
    """Raises ``ValueError`` unless ``x`` is (P, D) and ``y_onehot`` is a (P, C) one-hot matrix."""
    x = np.asarray(x)
    y = np.asarray(y_onehot)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"data must be x (P, D) and y (P, C); got x {x.shape} and y {y.shape}")
    if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
        raise ValueError("labels must be one-hot rows (exactly one 1 per row, labels in range)")
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs x must be finite")
