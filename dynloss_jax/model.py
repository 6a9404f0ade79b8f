"""The network: a flax MLP with ``depth`` hidden ReLU layers of ``width`` units, C logits.

The engine works on the parameters flattened to one vector ``w_N`` (N = number of parameters):
Hessian-vector products, Lanczos vectors and the GD update all live in that space.

Inits (SPEC §1):
  * ``"glorot"`` (default, the authors' current notebook): weights Glorot normal (truncated),
    biases N(0, 0.01²);
  * ``"lecun"`` (their older code): weights LeCun normal (truncated), zero biases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np
from jax.flatten_util import ravel_pytree

INITS = ("glorot", "lecun")
DTYPES = ("float64", "float32")


class MLP(nn.Module):
    """Dense(width) → ReLU, ``depth`` times, then Dense(n_classes)."""

    width: int
    n_classes: int = 3
    depth: int = 1
    init_name: str = "glorot"
    dtype: str = "float64"

    @nn.compact
    def __call__(self, x_PxD):
        if self.init_name == "glorot":
            kernel_init = nn.initializers.glorot_normal()
            bias_init = nn.initializers.normal(stddev=0.01)
        else:
            kernel_init = nn.initializers.lecun_normal()
            bias_init = nn.initializers.zeros
        dense = functools.partial(
            nn.Dense,
            kernel_init=kernel_init,
            bias_init=bias_init,
            dtype=self.dtype,
            param_dtype=self.dtype,
        )
        h = x_PxD
        for _ in range(self.depth):
            h = nn.relu(dense(self.width)(h))
        return dense(self.n_classes)(h)


class FlatModel(NamedTuple):
    """A network seen through its flat parameter vector."""

    init: Callable  # key -> w_N
    apply: Callable  # (w_N, x_PxD) -> logits_PxC
    n_params: int
    unravel: Callable  # w_N -> flax params pytree
    leaf_shapes: tuple  # shapes of the parameter arrays, in the order of the flat vector


def check_dtype(dtype: str) -> None:
    """Raises ``ValueError`` for an unknown dtype or float64 without ``jax_enable_x64``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before any computation, or pass dtype='float32'"
        )


@functools.cache
def flat_model(
    width: int,
    n_classes: int = 3,
    depth: int = 1,
    init: str = "glorot",
    dtype: str = "float64",
    n_inputs: int = 2,
) -> FlatModel:
    """The MLP of ``width`` as a :class:`FlatModel`; cached, so the same static key gives the same
    functions (and no recompilation)."""
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    check_dtype(dtype)
    module = MLP(width=width, n_classes=n_classes, depth=depth, init_name=init, dtype=dtype)
    x_dummy = np.zeros((1, n_inputs), dtype)
    with jax.ensure_compile_time_eval():  # may first be called while tracing
        shapes = jax.eval_shape(module.init, jax.random.key(0), x_dummy)
        _, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    leaf_shapes = tuple(tuple(s.shape) for s in jax.tree.leaves(shapes))
    n_params = sum(s.size for s in jax.tree.leaves(shapes))

    def init_fn(key):
        return ravel_pytree(module.init(key, x_dummy))[0]

    def apply_fn(w_N, x_PxD):
        return module.apply(unravel(w_N), x_PxD.astype(dtype))

    return FlatModel(init_fn, apply_fn, n_params, unravel, leaf_shapes)


@functools.cache
def embedding(width: int, padded_width: int, **model) -> np.ndarray:
    """Where the parameters of the ``width`` network sit in the flat vector of the same network
    padded to ``padded_width`` hidden units per layer (``model``: the other arguments of
    :func:`flat_model`): positions, in the order of the unpadded flat vector.

    Every parameter array of the padded network holds the unpadded one in its leading corner
    (kernels are (fan_in, fan_out), biases (fan_out,)); the padded units' weights, in and out,
    are the remaining entries. With those at zero the padded network computes exactly what the
    unpadded one does (ReLU(0) = 0, and JAX's ReLU has derivative 0 at 0, so their gradients are
    zero too).
    """
    if not 1 <= width <= padded_width:
        raise ValueError(f"need 1 <= width <= padded_width, got {width}, {padded_width}")
    real = flat_model(width, **model).leaf_shapes
    padded = flat_model(padded_width, **model).leaf_shapes
    positions, offset = [], 0
    for r, p in zip(real, padded, strict=True):
        corner = np.indices(r).reshape(len(r), -1)
        positions.append(offset + np.ravel_multi_index(corner, p))
        offset += int(np.prod(p))
    return np.concatenate(positions)
