"""Cost of one Hessian measurement: jvp-of-grad per product against a gradient linearised once.

A measurement is a 16-step Lanczos (the engine's default) on the Hessian of DCE at width 100 on
the spiral (float64, after 300 GD steps at η = 1). ``jvp``: every product is
``jax.jvp(jax.grad(f), (w,), (v,))``, which re-runs the forward and backward pass of the
gradient; ``linearize``: ``jax.linearize(jax.grad(f), w)`` once, then each product evaluates
only the tangent map. Both are jitted; medians of repeats after a warm-up, one CPU device.

    python -m benchmarks.hvp_cost [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


def trained_dce(width: int, steps: int = 300):
    """The benchmarks' measuring point: DCE on the paper's spiral with Γ of step 2000 (A = 70,
    T = 5000), after ``steps`` GD steps at η = 1 from ``key(0)``. Returns ``(model, f, w_N)``
    with ``f(w_N)`` the loss. Needs float64 on."""
    import jax
    import jax.numpy as jnp

    from dynloss_jax.data import spiral
    from dynloss_jax.losses import dce
    from dynloss_jax.model import flat_model
    from dynloss_jax.schedule import gamma

    model = flat_model(width)
    x, y = (jnp.asarray(a) for a in spiral(100, seed=0))
    g = gamma(2000, n_classes=3, amplitude=70.0, period=5000)

    def f(w_N):
        return dce(model.apply(w_N, x), y, g)

    w = model.init(jax.random.key(0))
    step = jax.jit(lambda w: w - jax.grad(f)(w))
    for _ in range(steps):
        w = step(w)
    return model, f, w


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--num-matvecs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from dynloss_jax import eig

    _, f, w = trained_dce(args.width)
    key = jax.random.key(1)
    v0 = jnp.zeros_like(w)

    @jax.jit
    def by_jvp(w):
        return eig.lanczos(lambda v: eig.hvp(f, w, v), v0, key, num_matvecs=args.num_matvecs)

    @jax.jit
    def by_linearize(w):
        _, matvec = jax.linearize(jax.grad(f), w)
        return eig.lanczos(matvec, v0, key, num_matvecs=args.num_matvecs)

    out = {}
    for name, fn in (("jvp", by_jvp), ("linearize", by_linearize)):
        jax.block_until_ready(fn(w))
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(w))
            times.append(time.perf_counter() - t)
        out[name] = {
            "median_ms": 1e3 * statistics.median(times),
            "lam_K": [float(v) for v in fn(w).top_K],
        }
    ratio = out["jvp"]["median_ms"] / out["linearize"]["median_ms"]
    for name, r in out.items():
        print(
            f"{name:10s} {r['median_ms']:8.3f} ms per measurement ({args.num_matvecs} products)"
            f"  λ1, λ2 = {r['lam_K'][0]:.12g}, {r['lam_K'][1]:.12g}"
        )
    print(f"linearize is ×{ratio:.2f} faster per measurement")
    if args.json:
        report = {
            "width": args.width,
            "num_matvecs": args.num_matvecs,
            "repeats": args.repeats,
            "results": out,
            "jvp_over_linearize": ratio,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "load_avg": list(os.getloadavg()),
            "command": "python -m benchmarks.hvp_cost --json " + args.json,
        }
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
