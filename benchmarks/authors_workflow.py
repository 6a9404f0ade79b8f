"""The authors' workflow, re-implemented as the benchmark's baseline.

The public notebook of Lavin & Ruiz-García trains one network at a time in a Python loop: a jitted
gradient-descent step, then the loss, weighted loss, accuracy and Γ computed by separate jitted
calls and fetched to the host at every step, and every 25 steps the Hessian's top eigenvalues from
an order-10 Lanczos run whose iterations (a jitted Hessian-vector product, then
reorthogonalisation against the previous vectors with one small array operation per vector) are a
Python loop, the tridiagonal matrix being diagonalised on the host. This module writes that
workflow independently of the package, with the same network function, data, Γ and loss, so that
the benchmark compares like with like; it is not the authors' code.

Two versions: ``sync=True`` fetches every metric to the host at every step, as the notebook
does; ``sync=False`` is what a careful user of the notebook gets by keeping the per-step metrics
as device arrays and fetching them once at the end (asynchronous dispatch then overlaps the
Python loop with the computation) — the stronger peer. Both do the same work and compute the
same numbers (``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

ORDER = 10  # their Lanczos order


def mlp_apply(params, x_PxD):
    """Dense → ReLU → Dense on a list of (kernel, bias) pairs, like their stax network."""
    (k1, b1), (k2, b2) = params
    return jnp.maximum(x_PxD @ k1 + b1, 0.0) @ k2 + b2


def class_weights(t, c, amplitude, period, n_classes=3):
    """Γ at τ = t within the period, class c emphasised (their ``c_fn``)."""
    slope = 2.0 * (amplitude - 1.0) / period
    w_main = jnp.where(t < period / 2.0, 1.0 + t * slope, 2.0 * amplitude - t * slope - 1.0)
    raw = jnp.ones(n_classes) + (w_main - 1.0) * jnp.eye(n_classes)[c]
    return raw / jnp.sum(raw) * n_classes


@jax.jit
def weighted_loss(params, x, y, gamma_C):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(mlp_apply(params, x)) * y * gamma_C, axis=-1))


@jax.jit
def static_loss(params, x, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(mlp_apply(params, x)) * y, axis=-1))


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(mlp_apply(params, x), axis=1) == jnp.argmax(y, axis=1))


@jax.jit
def gd_step(params, x, y, gamma_C, eta):
    g = jax.grad(weighted_loss)(params, x, y, gamma_C)
    return jax.tree.map(lambda p, dp: p - eta * dp, params, g)


@jax.jit
def hvp(params, x, y, gamma_C, v_N):
    """H·v on the flattened parameters (forward-over-reverse)."""
    flat, unravel = ravel_pytree(params)

    def f(w):
        return weighted_loss(unravel(w), x, y, gamma_C)

    return jax.jvp(jax.grad(f), (flat,), (v_N,))[1]


def lanczos_top2(params, x, y, gamma_C, key, order=ORDER):
    """λ1, λ2 from ``order`` Lanczos steps with full reorthogonalisation, driven from Python."""
    dim = ravel_pytree(params)[0].shape[0]
    tridiag = np.zeros((order, order))
    vecs = []
    v = jax.random.normal(key, (dim,), gamma_C.dtype)
    v = v / jnp.linalg.norm(v)
    v_old, beta = jnp.zeros_like(v), 0.0
    for i in range(order):
        vecs.append(v)
        w = hvp(params, x, y, gamma_C, v)
        w = w - beta * v_old
        alpha = jnp.dot(w, v)
        w = w - alpha * v
        for tau in vecs:  # full reorthogonalisation, one vector at a time
            w = w - jnp.dot(w, tau) * tau
        beta = float(jnp.linalg.norm(w))
        tridiag[i, i] = float(alpha)
        if i + 1 < order:
            tridiag[i, i + 1] = tridiag[i + 1, i] = beta
        v_old, v = v, w / beta
    return np.sort(np.linalg.eigvalsh(tridiag))[::-1][:2]


def train(params, x, y, *, eta, amplitude, period, n_steps, eig_every, key, sync=True):
    """Their loop for one run; returns the parameters and per-step host lists (loss, weighted
    loss, accuracy, Γ) and the eigenvalue list. ``sync=False`` keeps the metrics on the device
    until the end of the run."""
    fetch = float if sync else (lambda a: a)
    losses, weighted, accs, gammas, lams = [], [], [], [], []
    for t in range(n_steps):
        k = t // period
        gamma_C = class_weights(t - k * period, k % 3, amplitude, period).astype(x.dtype)
        if eig_every and t % eig_every == 0:
            key, sub = jax.random.split(key)
            lams.append(lanczos_top2(params, x, y, gamma_C, sub))
        params = gd_step(params, x, y, gamma_C, eta)
        # metrics of the new parameters, fetched to the host every step as in their loop
        losses.append(fetch(static_loss(params, x, y)))
        accs.append(fetch(accuracy(params, x, y)))
        weighted.append(fetch(weighted_loss(params, x, y, gamma_C)))
        gammas.append(np.asarray(gamma_C) if sync else gamma_C)
    if not sync:
        losses, weighted, accs, gammas = (
            [float(v) for v in jax.device_get(values)]
            if i < 3
            else list(np.asarray(jax.device_get(values)))
            for i, values in enumerate((losses, weighted, accs, gammas))
        )
    return params, (losses, weighted, accs, gammas, lams)


def seed_steps_per_s(params_list, x, y, *, eta, amplitude, period, n_steps, eig_every, sync=True):
    """Runs each seed's loop in turn (after a short warm-up that compiles every call)."""
    train(
        params_list[0],
        x,
        y,
        eta=eta,
        amplitude=amplitude,
        period=period,
        n_steps=max(2, eig_every + 1),
        eig_every=eig_every,
        key=jax.random.key(0),
        sync=sync,
    )
    started = time.perf_counter()
    for i, params in enumerate(params_list):
        train(
            params,
            x,
            y,
            eta=eta,
            amplitude=amplitude,
            period=period,
            n_steps=n_steps,
            eig_every=eig_every,
            key=jax.random.key(i),
            sync=sync,
        )
    return len(params_list) * n_steps / (time.perf_counter() - started)
