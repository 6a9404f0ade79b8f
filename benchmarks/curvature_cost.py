"""Cost of the class-resolved curvature and of the Gauss–Newton / NTK operators, per training step.

At the benchmarks' measuring point (DCE at width 100 on the paper's spiral, Γ of step 2000 with
A = 70, T = 5000, after 300 GD steps at η = 1; float64), each piece is jitted and timed against
one full-batch GD step, all in one process, in round-robin over repeats (so a change of machine
load hits every piece alike); the medians and their ratios to the step are printed:

* ``step``: one GD step w ← w − η∇F (the unit);
* ``class_records``: per-class loss and accuracy (:func:`class_progress`) and the norms of the C
  class gradients (:func:`class_gradients`), on their own;
* ``step_with_losses``: a step and the per-class loss and accuracy in one program;
* ``step_with_records``: a step taking its gradient as Σ_c g_c, with all the class records, in
  one program (what a compiled run would pay per recorded step);
* ``step_with_records_subsets``: the same with the class gradients computed on each class's
  samples alone (:func:`class_gradients_by_subsets`);
* ``class_split_k``: the class split and alignments of K tracked vectors (:func:`class_split`);
* ``hessian_top2`` / ``ggn_top2`` / ``ntk_top2``: 16-product Lanczos on H, G and Θ;
* ``gap``: :func:`hessian_ggn_gap` (two 16-product Lanczos runs and the functional term).

    python -m benchmarks.curvature_cost [--width 100] [--repeats 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--num-matvecs", type=int, default=16)
    p.add_argument("--k", type=int, default=2, help="tracked vectors in the class split")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import functools

    import jax.numpy as jnp

    from dynloss_jax import curvature, eig
    from dynloss_jax.data import spiral
    from dynloss_jax.environment import environment
    from dynloss_jax.losses import dce
    from dynloss_jax.model import flat_model
    from dynloss_jax.schedule import gamma

    model = flat_model(args.width)
    apply = model.apply
    x, y = (jnp.asarray(a) for a in spiral(100, seed=0))
    g = gamma(2000, n_classes=3, amplitude=70.0, period=5000)
    m = args.num_matvecs

    def F(w):
        return dce(apply(w, x), y, g)

    step = jax.jit(lambda w: w - jax.grad(F)(w))
    w = model.init(jax.random.key(0))
    for _ in range(300):
        w = step(w)
    key = jax.random.key(1)
    top = jax.jit(functools.partial(curvature.hessian_ggn_gap, apply, dce, num_matvecs=m))
    U = eig.lanczos(
        lambda v: curvature.hessian_matvec(apply, dce, w, x, y, g, v),
        jnp.zeros_like(w),
        key,
        num_matvecs=m,
        k=args.k,
    ).vectors_KxN

    @jax.jit
    def class_records(w):
        progress = curvature.class_progress(apply, dce, w, x, y, g)
        grads = curvature.class_gradients(apply, dce, w, x, y, g)
        return progress, jnp.linalg.norm(grads, axis=1)

    @jax.jit
    def step_with_records(w):
        # the step's gradient is Σ_c g_c, so the records add only the C − 1 extra cotangents
        grads = curvature.class_gradients(apply, dce, w, x, y, g)
        progress = curvature.class_progress(apply, dce, w, x, y, g)
        return w - grads.sum(axis=0), progress, jnp.linalg.norm(grads, axis=1)

    sets = curvature.class_index_sets(y)

    @jax.jit
    def step_with_records_subsets(w):
        grads = curvature.class_gradients_by_subsets(apply, dce, w, x, y, g, sets)
        progress = curvature.class_progress(apply, dce, w, x, y, g)
        return w - grads.sum(axis=0), progress, jnp.linalg.norm(grads, axis=1)

    @jax.jit
    def step_with_losses(w):
        return step(w), curvature.class_progress(apply, dce, w, x, y, g)

    @jax.jit
    def class_split(w, U):
        return curvature.class_split(apply, dce, w, x, y, g, U)

    @jax.jit
    def hessian_top2(w):
        def mv(v):
            return curvature.hessian_matvec(apply, dce, w, x, y, g, v)

        return eig.lanczos(mv, jnp.zeros_like(w), key, num_matvecs=m, k=2)

    @jax.jit
    def ggn_top2(w):
        return curvature.ggn_top(apply, dce, w, x, y, g, key, num_matvecs=m, k=2)

    @jax.jit
    def ntk_top2(w):
        return curvature.ntk_top(apply, w, x, 3, key, num_matvecs=m, k=2)

    pieces = {
        "step": lambda: step(w),
        "class_records": lambda: class_records(w),
        "step_with_losses": lambda: step_with_losses(w),
        "step_with_records": lambda: step_with_records(w),
        "step_with_records_subsets": lambda: step_with_records_subsets(w),
        f"class_split_k{args.k}": lambda: class_split(w, U),
        "hessian_top2": lambda: hessian_top2(w),
        "ggn_top2": lambda: ggn_top2(w),
        "ntk_top2": lambda: ntk_top2(w),
        "gap": lambda: top(w, x, y, g, key),
    }
    for fn in pieces.values():  # compile and warm up
        jax.block_until_ready(fn())
    load_before = list(os.getloadavg())
    times = {name: [] for name in pieces}
    for _ in range(args.repeats):
        for name, fn in pieces.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    load_after = list(os.getloadavg())

    median = {name: statistics.median(ts) for name, ts in times.items()}
    split = class_split(w, U)
    gap = top(w, x, y, g, key)
    values = {
        "lam_K_hessian": [float(v) for v in hessian_top2(w).top_K],
        "lam_K_ggn": [float(v) for v in ggn_top2(w).top_K],
        "lam_K_ntk": [float(v) for v in ntk_top2(w).top_K],
        "split_KxC": [[float(v) for v in row] for row in split.curvature_KxC],
        "split_sum_rel_err": [
            float(abs(s - lam) / abs(lam))
            for s, lam in zip(split.lam_K, hessian_top2(w).top_K, strict=True)
        ],
        "abs_cos_KxC": [[float(abs(v)) for v in row] for row in split.cosine_KxC],
        "gap": float(gap.gap),
        "functional_u1": float(gap.functional_u1),
    }
    print(f"width {args.width}, N = {w.shape[0]}, P = {x.shape[0]}, {args.repeats} repeats")
    for name, t in median.items():
        print(f"{name:26s} {1e3 * t:9.3f} ms   ×{t / median['step']:7.2f} a step")
    print(f"λ1, λ2: H {values['lam_K_hessian']}, GGN {values['lam_K_ggn']}")
    print(f"NTK λ1, λ2 {values['lam_K_ntk']}; λ1(H) − λ1(G) = {values['gap']:.6g}")
    if args.json:
        report = {
            "width": args.width,
            "n_params": int(w.shape[0]),
            "n_samples": int(x.shape[0]),
            "num_matvecs": m,
            "k": args.k,
            "repeats": args.repeats,
            "median_ms": {name: 1e3 * t for name, t in median.items()},
            "per_step": {name: t / median["step"] for name, t in median.items()},
            "values": values,
            "load_avg_before": load_before,
            "load_avg_after": load_after,
            "environment": environment(),
            "command": "python -m benchmarks.curvature_cost " + " ".join(argv or sys.argv[1:]),
        }
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
