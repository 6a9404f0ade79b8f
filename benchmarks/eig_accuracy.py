"""Accuracy of the Hessian eigenvalues against a dense Hessian, and what other solvers pay for it.

    python -m benchmarks.eig_accuracy                  # both tables, widths 2 4 16 100
    python -m benchmarks.eig_accuracy --widths 2 16    # fewer widths

Table 1 — for each width and dtype, the largest relative error of λ1 and λ2 over four
operators: the spiral network at initialisation and after 500 full-batch GD steps of DCE
(η = 1, A = 70, T = 400) and of MSE (η = 0.5). Lanczos with 16 Hessian-vector products, cold
(random start) and warm (started from the top-2 Ritz vectors of a measurement 25 steps earlier,
as the engine does; step 500 only). The reference is ``eigvalsh`` of the dense float64 Hessian at
the same parameters (float32 runs: the float32 parameters, cast).

Table 2 — width 16, MSE at initialisation (λ1 = 4.00, λ2 = 3.70, λ_min = −0.94): the fewest
Hessian-vector products with which each solver has both λ1 and λ2 to 1e-8 relative: Lanczos
(cold), power iteration with deflation (with the exact shift −λ_min, its best case, and with
the spectral-radius shift of ``top_hessian_eigenvalues(method="power")``), and JAX's
``lobpcg_standard`` (2 + 8 products per iteration for k = 2).

``--trajectories`` adds Table 3: the largest relative error of λ1 and λ2 over every measurement of
three GD runs (width 100 CE at the edge of stability, width 100 DCE through five class switches,
and width 8 DCE with T = 20, where Γ jumps at every switch), for 10, 12, 16 and 20 products,
warm-started as in the engine and cold.

Runs in about two minutes on two CPU cores (``--trajectories``: about fifteen more).

``--figure RUN --png FILE`` draws, instead, the loss and λ1, λ2 of a tracked run folder against
2/η — the README's edge-of-stability figure:

    dynloss train --loss ce --width 100 --eta 1 --steps 5000 --eig-every 25 --seeds 1 \\
        --out runs/eos_ce
    python -m benchmarks.eig_accuracy --figure runs/eos_ce \\
        --png docs/figures/edge_of_stability_ce.png
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental.sparse.linalg import lobpcg_standard  # noqa: E402

from dynloss_jax import eig  # noqa: E402
from dynloss_jax.data import spiral  # noqa: E402
from dynloss_jax.losses import get_loss  # noqa: E402
from dynloss_jax.model import flat_model  # noqa: E402
from dynloss_jax.schedule import gamma  # noqa: E402

M = 16
PERIOD = 400
RUNS = {"dce": (1.0, 70.0), "mse": (0.5, 1.0)}  # loss: (η, A)


def _objective(model, loss, amplitude, dtype, period=PERIOD):
    x, y = spiral()

    def f(w, t):
        g = gamma(t, n_classes=3, amplitude=jnp.asarray(amplitude, dtype), period=period)
        return get_loss(loss)(model.apply(w, jnp.asarray(x, dtype)), jnp.asarray(y, dtype), g)

    return f


def spiral_errors(width: int, dtype: str):
    """Max relative errors (cold λ1, cold λ2, warm λ1, warm λ2) over the four operators."""
    worst = np.zeros(4)
    for loss, (eta, amplitude) in RUNS.items():
        model = flat_model(width, dtype=dtype)
        f = _objective(model, loss, amplitude, dtype)
        f64 = _objective(flat_model(width), loss, amplitude, "float64")

        @jax.jit
        def run(key, f=f, f64=f64, eta=eta, model=model):
            init_key, *keys = jax.random.split(key, 5)
            w0 = model.init(init_key)

            def step(w, t):
                return w - eta * jax.grad(f)(w, t), w

            w500, w_T = jax.lax.scan(step, w0, jnp.arange(500))

            def lanczos(w, t, v0, k):
                return eig.lanczos(lambda v: eig.hvp(f, w, v, t), v0, k, num_matvecs=M).top_K

            def dense(w, t):
                h = jax.hessian(f64)(w.astype(jnp.float64), t)
                return jnp.linalg.eigvalsh(h)[::-1][:2]

            zeros = jnp.zeros_like(w0)
            prev = eig.lanczos(
                lambda v: eig.hvp(f, w_T[475], v, 475), zeros, keys[2], num_matvecs=M
            )
            warm = lanczos(w500, 500, jnp.sum(prev.vectors_KxN, axis=0), keys[3])
            return (
                lanczos(w0, 0, zeros, keys[0]),
                dense(w0, 0),
                lanczos(w500, 500, zeros, keys[1]),
                warm,
                dense(w500, 500),
            )

        cold0, d0, cold500, warm500, d500 = (
            np.asarray(a, np.float64) for a in run(jax.random.key(0))
        )
        cold = np.maximum(np.abs(cold0 - d0) / np.abs(d0), np.abs(cold500 - d500) / np.abs(d500))
        warm = np.abs(warm500 - d500) / np.abs(d500)
        worst = np.maximum(worst, np.r_[cold, warm])
    return worst


def budget_table():
    """Fewest products for 1e-8 on λ1 and λ2, per solver, at width 16 (MSE at init)."""
    x, y = spiral()
    model = flat_model(16)
    w = model.init(jax.random.key(0))

    def f(w):
        return get_loss("mse")(model.apply(w, x), y, None)

    spectrum = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(w)))[::-1]
    matvec = jax.jit(lambda v: eig.hvp(f, w, v))

    def error(values):
        return float(np.max(np.abs(np.asarray(values)[:2] - spectrum[:2]) / spectrum[:2]))

    rows = []
    for m in range(4, 41):
        res = eig.lanczos(matvec, jnp.zeros_like(w), jax.random.key(0), num_matvecs=m)
        if error(res.top_K) < 1e-8:
            rows.append(("Lanczos, cold start", m, error(res.top_K)))
            break

    v0 = jax.random.normal(jax.random.key(1), (2, w.size))

    def power_exact_shift(iters):
        return eig.power_iteration(matvec, v0, num_iters=iters, shift=-spectrum[-1])[0]

    for label, run, per_iter in [
        ("power + deflation, shift −λ_min (best case)", power_exact_shift, 2),
        (
            "power + deflation, shift ρ̂ ≈ ‖H‖ (top_hessian_eigenvalues)",
            lambda iters: top_hessian_eigenvalues_power(matvec, w, iters),
            3,
        ),
    ]:
        iters = _fewest(lambda i, run=run: error(run(i)) < 1e-8, 1, 4000)
        rows.append((label, per_iter * iters, error(run(iters))))

    block = jax.jit(jax.vmap(matvec, in_axes=1, out_axes=1))
    x0 = jax.random.normal(jax.random.key(1), (w.size, 2))
    for iters in range(1, 60):
        theta, _, _ = lobpcg_standard(block, x0, m=iters)
        if error(theta) < 1e-8:
            rows.append(("jax lobpcg_standard", 2 + 8 * iters, error(theta)))
            break
    return rows


def _fewest(ok, lo: int, hi: int) -> int:
    """Smallest n in [lo, hi] with ok(n), by bisection (ok is taken as monotone)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def top_hessian_eigenvalues_power(matvec, w, iters):
    """The power branch of :func:`dynloss_jax.top_hessian_eigenvalues`, on a flat operator."""
    v0 = jax.random.normal(jax.random.key(0), (3, w.size), w.dtype)
    (theta,), _, (res,) = eig.power_iteration(matvec, v0[:1], num_iters=iters)
    rho = jnp.sqrt(theta**2 + res**2)
    values, _, _ = eig.power_iteration(matvec, v0[1:], num_iters=iters, shift=rho)
    return jnp.sort(values)[::-1]


MS = (10, 12, 16, 20)
TRAJECTORIES = [  # (width, loss, η, A, T, eig_every, steps, seeds)
    (100, "ce", 1.0, 1.0, 1000, 25, 2000, 1),  # edge of stability: η·λ1 ≈ 2
    (100, "dce", 1.0, 70.0, 200, 25, 1000, 1),  # five class switches
    (8, "dce", 1.0, 70.0, 20, 5, 120, 6),  # Γ jumps 7.9:1 → 1:1 at each switch
]


def trajectory_errors(width, loss, eta, amplitude, period, every, steps, seeds):
    """Max relative errors of λ1, λ2 along GD, measured every ``every`` steps with m products.

    Returns ``{(m, "warm" | "cold"): (err_λ1, err_λ2)}``; warm chains each m's own top-2 Ritz
    vectors from one measurement to the next, as the engine does.
    """
    model = flat_model(width)
    f = _objective(model, loss, amplitude, "float64", period)

    @jax.jit
    def advance(w, t0):
        def step(w, t):
            return w - eta * jax.grad(f)(w, t), None

        return jax.lax.scan(step, w, t0 + jnp.arange(every))[0]

    @jax.jit
    def measure(w, t, v0s, key):
        dense = jnp.linalg.eigvalsh(jax.hessian(f)(w, t))[::-1][:2]
        out = {}
        for m in MS:
            for mode in ("warm", "cold"):
                v0 = v0s[m] if mode == "warm" else jnp.zeros_like(w)
                out[m, mode] = eig.lanczos(lambda v: eig.hvp(f, w, v, t), v0, key, num_matvecs=m)
        return dense, out

    worst = {(m, mode): np.zeros(2) for m in MS for mode in ("warm", "cold")}
    for seed in range(seeds):
        w = model.init(jax.random.key(seed))
        v0s = {m: jnp.zeros_like(w) for m in MS}
        for t in range(0, steps, every):
            dense, out = measure(w, t, v0s, jax.random.fold_in(jax.random.key(seed), t))
            dense = np.asarray(dense)
            for key, res in out.items():
                err = np.abs(np.asarray(res.top_K) - dense) / np.abs(dense)
                worst[key] = np.maximum(worst[key], err)
            v0s = {m: jnp.sum(out[m, "warm"].vectors_KxN, axis=0) for m in MS}
            w = advance(w, t)
    return worst


def edge_of_stability_figure(run, png, tail: int = 2000) -> float:
    """λ1, λ2 of the first configuration of a tracked run against 2/η, with its loss above.

    Returns the mean of η·λ1 over measurements in the last ``tail`` steps (also printed on the
    figure).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eta = float(run.coords["eta"][0])
    first = (0,) * 6
    lam = run["lam"][first]
    eig_step, record_step = run["eig_step"], run["record_step"]
    late = eig_step >= record_step[-1] + 1 - tail
    mean = float(np.mean(eta * lam[late, 0]))
    loss = run.coords["loss"][0]
    width = run.coords["width"][0]

    fig, (ax_loss, ax_lam) = plt.subplots(
        2, 1, figsize=(7, 5), sharex=True, height_ratios=(1, 1.6), constrained_layout=True
    )
    ax_loss.plot(record_step, run["loss"][first], lw=0.7, color="C0")
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter("{x:.2g}")
    ax_loss.yaxis.set_minor_formatter("{x:.2g}")
    ax_loss.tick_params(axis="y", which="minor", labelsize=7)
    ax_loss.set_ylabel(f"{loss.upper()} loss")
    ax_lam.plot(eig_step, lam[:, 0], lw=1.2, color="C3", label="λ1")
    ax_lam.plot(eig_step, lam[:, 1], lw=1.0, color="C1", alpha=0.8, label="λ2")
    ax_lam.axhline(2 / eta, color="k", ls="--", lw=1, label=f"2/η = {2 / eta:g}")
    ax_lam.axvspan(eig_step[late][0], eig_step[-1], color="0.9", zorder=0)
    ax_lam.text(
        eig_step[late][0],
        0.04,
        f"  mean η·λ1 over the last {tail} steps: {mean:.2f}",
        transform=ax_lam.get_xaxis_transform(),
        fontsize=8,
    )
    ax_lam.set_xlabel("step t")
    ax_lam.set_ylabel("top Hessian eigenvalues")
    ax_lam.legend(fontsize=8, loc="upper left")
    every = int(eig_step[1] - eig_step[0])
    crossed = int(eig_step[np.argmax(eta * lam[:, 0] >= 2)])
    fig.suptitle(
        f"{loss.upper()}, width {width}, full-batch GD at η = {eta:g}: λ1 reaches 2/η at "
        f"step {crossed}, then hovers above it (edge of stability)\n(λ1, λ2 every "
        f"{every} steps: 16-product warm-started Lanczos)",
        fontsize=9,
    )
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return mean


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", nargs="+", type=int, default=[2, 4, 16, 100])
    p.add_argument(
        "--trajectories",
        action="store_true",
        help="also λ1, λ2 along GD runs for m = 10, 12, 16, 20 (about 15 minutes)",
    )
    p.add_argument(
        "--figure",
        metavar="RUN",
        help="instead: draw λ1, λ2 of a tracked run folder against 2/η to --png",
    )
    p.add_argument("--png", default="edge_of_stability.png", help="with --figure")
    args = p.parse_args(argv)
    if args.figure:
        from dynloss_jax import load_run

        mean = edge_of_stability_figure(load_run(args.figure), args.png)
        print(f"wrote {args.png}; mean η·λ1 over the last 2000 steps: {mean:.3f}")
        return

    print(f"Lanczos, {M} Hessian-vector products: max relative error vs the dense Hessian")
    print("over init + 500 GD steps of DCE (A = 70) and MSE\n")
    print("| width | N | dtype | cold λ1 | cold λ2 | warm λ1 | warm λ2 |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for width in args.widths:
        for dtype in ("float64", "float32"):
            e = spiral_errors(width, dtype)
            n = flat_model(width).n_params
            print(
                f"| {width} | {n} | {dtype} | " + " | ".join(f"{v:.1e}" for v in e) + " |",
                flush=True,
            )

    print("\nWidth 16, MSE at init: Hessian-vector products for λ1 and λ2 to 1e-8\n")
    print("| solver | products | max rel. error |")
    print("|---|---:|---:|")
    for label, products, err in budget_table():
        print(f"| {label} | {products} | {err:.1e} |")

    if not args.trajectories:
        return
    print("\nAlong GD runs: max relative error of λ1 / λ2 over all measurements\n")
    print(
        "| width | loss | η | A | T | every | steps × seeds | start | "
        + " | ".join(f"m = {m}" for m in MS)
        + " |"
    )
    print("|---:|---|---:|---:|---:|---:|---|---|" + "---:|" * len(MS))
    for width, loss, eta, amplitude, period, every, steps, seeds in TRAJECTORIES:
        worst = trajectory_errors(width, loss, eta, amplitude, period, every, steps, seeds)
        for mode in ("warm", "cold"):
            cells = " | ".join(f"{worst[m, mode][0]:.0e} / {worst[m, mode][1]:.0e}" for m in MS)
            print(
                f"| {width} | {loss} | {eta:g} | {amplitude:g} | {period} | {every} | "
                f"{steps} × {seeds} | {mode} | {cells} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
