"""The data sets: the paper's three-arm spiral, and small offline sets for checks beyond it.

Spiral (the paper's, bit-compatible with the authors'). Class j, point k = 0..N−1:
r = k/(N−1), θ = 2πj/C + revolutions·π·k/(N−1) + noise·ε with ε ~ N(0, 1) drawn by the legacy
NumPy generator ``RandomState(seed).randn(N)`` once per class in class order;
x = (r cos θ, r sin θ). Every class has a point at the origin.

Others, all built offline: ``wine`` (178 × 13, C = 3), ``iris`` (150 × 4, C = 3) and ``digits``
(1797 × 64, C = 10) from the copies bundled with scikit-learn; ``mnist1d`` (5000 × 40, C = 10)
generated locally by the ``mnist1d`` package with its default arguments (seed 42). They need the
optional extra ``pip install -e ".[data]"``. Each is split into train and validation sets by
:func:`stratified_split` and standardised per feature with the training split's mean and std.
"""

from __future__ import annotations

import functools
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATASETS = ("spiral", "wine", "iris", "digits", "mnist1d")

_EXTRA = 'pip install -e ".[data]"'


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


class MissingExtraError(ValueError):
    """A data set needs an optional dependency that is not installed."""


class Dataset(NamedTuple):
    """Train and validation arrays, float64 NumPy: ``x_*`` is (P, D), ``y_*`` is one-hot (P, C).

    ``info`` is a JSON-ready dict: name, n_train, n_val, n_features, n_classes, split_seed,
    val_fraction, and ``standardisation`` (a summary of the training mean and std, or a note).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    info: dict


class Data(NamedTuple):
    """The arrays a run trains and is validated on, in its dtype (shapes as in :class:`Dataset`)."""

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array


def make_data(x_train, y_train, x_val, y_val, dtype="float64") -> Data:
    """Raises ``ValueError`` unless x are (P, D), y one-hot (P, C), with D and C shared."""
    check_data(x_train, y_train)
    check_data(x_val, y_val)
    if np.shape(x_train)[1] != np.shape(x_val)[1] or np.shape(y_train)[1] != np.shape(y_val)[1]:
        raise ValueError(
            f"train and validation data differ in shape: x {np.shape(x_train)} vs "
            f"{np.shape(x_val)}, y {np.shape(y_train)} vs {np.shape(y_val)}"
        )
    return Data(*(jnp.asarray(a, dtype=dtype) for a in (x_train, y_train, x_val, y_val)))


def stratified_split(labels, val_fraction, seed):
    """Returns ``(train_idx, val_idx)``, each sorted, for integer ``labels`` of shape (P,).

    For each class c with n_c samples, round(val_fraction · n_c) of them (clipped to 1..n_c−1) are
    drawn for validation by ``np.random.default_rng(seed).permutation``, class by class in
    increasing label order. Deterministic in ``seed``; every class is in both splits.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if idx.size < 2:
            raise ValueError(f"class {c} has {idx.size} sample(s); a split needs at least 2")
        n_val = int(np.clip(np.floor(val_fraction * idx.size + 0.5), 1, idx.size - 1))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_dataset(
    name,
    *,
    points_per_class=100,
    n_classes=3,
    train_seed=0,
    val_seed=1,
    split_seed=0,
    val_fraction=0.25,
) -> Dataset:
    """The data set ``name`` (one of :data:`DATASETS`) as a :class:`Dataset`.

    ``spiral``: ``spiral(points_per_class, n_classes, seed=train_seed)`` for training and
    ``seed=val_seed`` for validation, unchanged and not standardised; ``split_seed`` and
    ``val_fraction`` are not used. Other sets: their own features and classes
    (``points_per_class``, ``n_classes``, ``train_seed`` and ``val_seed`` are not used), split by
    :func:`stratified_split` (``val_fraction``, ``split_seed``), then standardised as
    x ← (x − μ_train)/σ_train per feature, with σ_train = 1 where a feature is constant on the
    training split.

    Raises ``ValueError`` for an unknown name or a bad fraction/seed, and
    :class:`MissingExtraError` (a ``ValueError``) when the optional extra is not installed.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "spiral":
        x, y = spiral(points_per_class, n_classes, seed=train_seed)
        xv, yv = spiral(points_per_class, n_classes, seed=val_seed)
        info = dict(
            name=name,
            n_train=x.shape[0],
            n_val=xv.shape[0],
            n_features=x.shape[1],
            n_classes=y.shape[1],
            split_seed=None,
            val_fraction=None,
            train_seed=int(train_seed),
            val_seed=int(val_seed),
            points_per_class=int(points_per_class),
            standardisation="none: raw spiral coordinates, r <= 1",
        )
        return Dataset(x, y, xv, yv, info)
    if isinstance(val_fraction, bool) or not (0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if (
        not isinstance(split_seed, (int, np.integer))
        or isinstance(split_seed, bool)
        or split_seed < 0
    ):
        raise ValueError(f"split_seed must be an integer >= 0, got {split_seed!r}")
    x, labels = _raw(name)
    classes, labels = np.unique(labels, return_inverse=True)
    train, val = stratified_split(labels, val_fraction, split_seed)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    constant = std == 0.0  # e.g. the always-blank corner pixels of digits
    std = np.where(constant, 1.0, std)
    xs = (x - mean) / std
    y = np.eye(classes.size)[labels]
    varying = std[~constant] if (~constant).any() else np.full(1, np.nan)
    ds = Dataset(xs[train], y[train], xs[val], y[val], {})
    for xx, yy in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        check_data(xx, yy)
    ds.info.update(
        name=name,
        n_train=int(train.size),
        n_val=int(val.size),
        n_features=int(x.shape[1]),
        n_classes=int(classes.size),
        split_seed=int(split_seed),
        val_fraction=float(val_fraction),
        val_per_class=[int(n) for n in y[val].sum(axis=0)],
        standardisation=dict(
            rule="per feature, (x - train mean) / train std; std 1 where constant on train",
            mean_min=float(mean.min()),
            mean_max=float(mean.max()),
            std_min=float(varying.min()),  # over the features that vary on train
            std_max=float(varying.max()),
            n_constant_features=int(constant.sum()),
        ),
    )
    return ds


def _raw(name):
    """``(x_PxD float64, labels_P int)`` of a non-spiral set, importing its package lazily."""
    if name == "mnist1d":
        try:
            from mnist1d.data import get_dataset_args, make_dataset  # noqa: F401
        except ImportError as err:
            raise MissingExtraError(
                f'data set "{name}" needs the optional extra: {_EXTRA}'
            ) from err
        return _mnist1d()
    try:
        from sklearn import datasets
    except ImportError as err:
        raise MissingExtraError(f'data set "{name}" needs the optional extra: {_EXTRA}') from err
    bunch = getattr(datasets, f"load_{name}")()  # bundled with scikit-learn: no download
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


@functools.lru_cache(maxsize=4)
def _mnist1d(num_samples=None):
    """MNIST-1D from ``mnist1d.data.make_dataset`` with the package's default arguments
    (``num_samples`` overrides the default 5000), its own 80/20 split pooled back together.

    ``make_dataset`` builds the digits from templates in the package (``get_dataset`` would look
    for, or download, a pickle: not used). It seeds the global ``random`` and ``np.random``
    generators; their states are restored afterwards. Cached (about 2 s per call) and returned
    read-only; callers index, which copies.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if num_samples is not None:
        args.num_samples = int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float64)
    labels = np.concatenate([d["y"], d["y_test"]])
    x.flags.writeable = False
    labels.flags.writeable = False
    return x, labels
