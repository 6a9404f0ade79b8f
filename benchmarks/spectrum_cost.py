"""Accuracy and cost of the spectrum measurements (``dynloss_jax.spectrum``) at width 100.

The operator is the Hessian of DCE at width 100 (N = 603) on the spiral (A = 70, T = 5000,
Γ at t = 2000, float64) after 300 full-batch GD steps at η = 1 from seed 0, as in
``benchmarks.hvp_cost``. The reference is the dense ``jax.hessian``: its trace, Frobenius norm
and eigenvalues.

1. Trace: Hutchinson against Hutch++ at equal budgets of Hessian-vector products (HVPs), each
   over ``--keys`` independent keys: relative RMS error against the exact trace, mean reported
   standard error, the fraction of runs within 3 reported standard errors, and a verdict.
2. Cost: wall time of one jitted call (median of ``--repeats`` after a warm-up, one CPU
   device) of ``spectral_density``, ``hessian_trace`` (both methods), ``layer_sharpness`` and
   ``smallest_eigenvalue`` at their default sizes, the HVPs each uses, and its accuracy.
3. SLQ sanity: the first two moments of the density against tr(H)/N and tr(H²)/N, per probe
   (exact up to rounding) and averaged over probes (a stochastic estimate).

    python -m benchmarks.spectrum_cost [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


def _median_ms(fn, *args, repeats):
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    started, load_before = time.time(), os.getloadavg()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--steps", type=int, default=300, help="GD steps before measuring")
    p.add_argument("--budgets", type=int, nargs="+", default=[30, 60, 120, 240])
    p.add_argument("--keys", type=int, default=100, help="independent keys per trace setting")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--density-probes", type=int, default=64, help="SLQ probes for the moments")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from benchmarks.hvp_cost import trained_dce
    from dynloss_jax import spectrum
    from experiments.common import run_info

    model, f, w = trained_dce(args.width, args.steps)

    def loss(params):  # the spectrum functions take the pytree: one block per leaf
        return f(ravel_pytree(params)[0])

    params = model.unravel(w)
    assert np.array_equal(ravel_pytree(params)[0], w)
    trace_key, time_key, density_key = jax.random.split(jax.random.key(1), 3)

    # Reference: the dense Hessian.
    hess = jax.jit(jax.hessian(f))
    H = np.asarray(hess(w))
    H = 0.5 * (H + H.T)
    n = H.shape[0]
    lam = np.linalg.eigvalsh(H)
    tr, frob2 = float(np.trace(H)), float(np.sum(H * H))
    offdiag2 = frob2 - float(np.sum(np.diag(H) ** 2))
    lam_abs2 = np.sort(lam**2)[::-1]
    ref = {
        "n_params": n,
        "trace": tr,
        "frobenius2": frob2,
        "lam_max": float(lam[-1]),
        "lam_2": float(lam[-2]),
        "lam_min": float(lam[0]),
        "n_negative": int(np.sum(lam < -1e-12 * abs(lam[-1]))),
        "hutchinson_sd_per_sample": float(np.sqrt(2.0 * offdiag2)),  # √Var(zᵀHz), Rademacher
    }
    print(
        f"width {args.width}, N = {n}: tr H = {tr:.6g}, ‖H‖_F² = {frob2:.6g}, "
        f"λ1 = {lam[-1]:.6g}, λ2 = {lam[-2]:.6g}, λ_min = {lam[0]:.6g}, "
        f"{ref['n_negative']} negative eigenvalues"
    )

    # 1. Hutchinson vs Hutch++ at equal HVP budgets.
    @functools.partial(jax.jit, static_argnums=(2, 3))
    def traces(params, keys, num_samples, method):
        # Batches of keys, ≤ 1200 products at once: all at once would hold keys × products
        # activations (GBs at 100 keys × 240 products).
        return jax.lax.map(
            lambda k: spectrum.hessian_trace(
                loss, params, key=k, num_samples=num_samples, method=method
            ),
            keys,
            batch_size=max(1, 1200 // num_samples),
        )

    rows = []
    for i, (num, method) in enumerate((b, m) for b in args.budgets for m in spectrum.TRACE_METHODS):
        keys = jax.random.split(jax.random.fold_in(trace_key, i), args.keys)
        est, se = (np.asarray(a) for a in traces(params, keys, num, method))
        err = est - tr
        s = num // 3
        row = {
            "method": method,
            "products": num,
            "rel_rms_error": float(np.sqrt(np.mean(err**2)) / abs(tr)),
            "rel_bias": float(np.mean(err) / abs(tr)),
            "rel_mean_se": float(np.mean(se) / abs(tr)),
            "within_3se": float(np.mean(np.abs(err) <= 3 * se)),
        }
        if method == "hutchinson":
            row["rel_theory_sd"] = ref["hutchinson_sd_per_sample"] / np.sqrt(num) / abs(tr)
        else:  # how much ‖H‖_F² the best rank-s deflation would leave
            row["sketch_size"] = s
            row["frob2_outside_top_s"] = float(np.sum(lam_abs2[s:]) / frob2)
        rows.append(row)
    print(f"\ntrace over {args.keys} keys each (errors relative to |tr H|)")
    print(f"{'method':11s} {'HVPs':>5s} {'RMS err':>9s} {'bias':>9s} {'mean SE':>9s} {'≤3SE':>6s}")
    for r in rows:
        print(
            f"{r['method']:11s} {r['products']:5d} {r['rel_rms_error']:9.2e} "
            f"{r['rel_bias']:9.2e} {r['rel_mean_se']:9.2e} {r['within_3se']:6.2f}"
        )
    ratios = {}
    for b in args.budgets:
        by = {r["method"]: r["rel_rms_error"] for r in rows if r["products"] == b}
        ratios[b] = by["hutchinson"] / by["hutch++"]
    lo, hi = min(ratios.values()), max(ratios.values())
    if lo > 1:
        verdict = f"Hutch++ is better: RMS error ×{lo:.2f}–×{hi:.2f} smaller at equal products"
    elif hi < 1:
        verdict = (
            f"Hutchinson is better: RMS error ×{1 / hi:.2f}–×{1 / lo:.2f} smaller at equal products"
        )
    else:
        verdict = f"neither wins throughout: Hutchinson/Hutch++ RMS ratio ×{lo:.2f}–×{hi:.2f}"
    verdict += f" (budgets {', '.join(map(str, args.budgets))}, width {args.width})"
    print("verdict:", verdict)

    # 2. Cost and accuracy of one measurement at the default sizes.
    def timed(name, fn, products, note):
        jitted = jax.jit(fn)
        ms = _median_ms(jitted, params, time_key, repeats=args.repeats)
        value = jitted(params, time_key)
        return name, dict(
            median_ms=ms,
            products=products,
            ms_per_product=ms / products,
            settings=note,
            value=value,
        )

    n_blocks = len(jax.tree.leaves(params))
    timings = dict(
        [
            timed(
                "spectral_density",
                lambda p, k: spectrum.spectral_density(loss, p, key=k),
                32 * 4,
                "defaults num_matvecs=32, num_probes=4",
            ),
            *(
                timed(
                    f"hessian_trace[{m}]",
                    lambda p, k, m=m: spectrum.hessian_trace(loss, p, key=k, method=m),
                    30,
                    "default num_samples=30",
                )
                for m in spectrum.TRACE_METHODS
            ),
            timed(
                "layer_sharpness",
                lambda p, k: spectrum.layer_sharpness(loss, p, key=k),
                16 * n_blocks,
                f"default num_matvecs=16 per block, {n_blocks} blocks",
            ),
            timed(
                "smallest_eigenvalue",
                lambda p, k: spectrum.smallest_eigenvalue(loss, p, key=k),
                64,
                "default num_matvecs=64",
            ),
        ]
    )
    dense_ms = _median_ms(hess, w, repeats=max(3, args.repeats // 4))
    # Accuracy of each timed value against the dense reference.
    rho = timings["spectral_density"].pop("value")
    timings["spectral_density"]["top_node_minus_lam_max"] = float(np.max(rho.nodes) - lam[-1])
    timings["spectral_density"]["bottom_node_minus_lam_min"] = float(np.min(rho.nodes) - lam[0])
    for m in spectrum.TRACE_METHODS:
        est, se = timings[f"hessian_trace[{m}]"].pop("value")
        timings[f"hessian_trace[{m}]"]["rel_error"] = float((est - tr) / abs(tr))
        timings[f"hessian_trace[{m}]"]["rel_se"] = float(se / abs(tr))
    sharp = timings["layer_sharpness"].pop("value")
    ends = np.cumsum([leaf.size for leaf in jax.tree.leaves(params)])
    blocks = {}
    for name, end, size in zip(
        sharp, ends, [leaf.size for leaf in jax.tree.leaves(params)], strict=True
    ):
        exact = float(np.linalg.eigvalsh(H[end - size : end, end - size : end])[-1])
        blocks[name] = {"lanczos": float(sharp[name]), "dense": exact, "size": int(size)}
    timings["layer_sharpness"]["blocks"] = blocks
    small = timings["smallest_eigenvalue"].pop("value")
    timings["smallest_eigenvalue"].update(
        value=float(small.value),
        residual=float(small.residual),
        converged=bool(small.converged),
        rel_error=float((small.value - lam[0]) / abs(lam[0])),
    )
    print(f"\none measurement, width {args.width} (median of {args.repeats}, jitted)")
    print(f"{'function':28s} {'HVPs':>5s} {'ms':>9s} {'ms/HVP':>8s}  settings")
    for name, t in timings.items():
        print(
            f"{name:28s} {t['products']:5d} {t['median_ms']:9.3f} {t['ms_per_product']:8.4f}"
            f"  {t['settings']}"
        )
    print(f"{'dense jax.hessian':28s} {'-':>5s} {dense_ms:9.3f} {'':8s}  N = {n} columns")
    for name, b in blocks.items():
        print(f"  λ1[{name}] = {b['lanczos']:.10g} (dense {b['dense']:.10g}, {b['size']} entries)")
    s_ = timings["smallest_eigenvalue"]
    print(
        f"  λ_min = {s_['value']:.6g} (dense {lam[0]:.6g}, rel. error {s_['rel_error']:.2e}),"
        f" residual {s_['residual']:.2e}, converged = {s_['converged']}"
    )

    # 3. SLQ moments: per probe exact (uᵀHu, ‖Hu‖²), averaged an estimate of tr(H^p)/N.
    moments = {}
    for label, probes in (("default", 4), ("many", args.density_probes)):
        key = jax.random.fold_in(density_key, probes)
        rho = spectrum.spectral_density(loss, params, key=key, num_probes=probes)
        # The probes spectral_density draws (Rademacher, normalised): for the per-probe check.
        z = np.asarray(jax.random.rademacher(key, (probes, n), jnp.int32), np.float64)
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        Hu = u @ H
        entry = {"num_probes": probes, "num_matvecs": 32}
        for order, want, per_probe in (
            (1, tr / n, np.sum(u * Hu, axis=1)),
            (2, frob2 / n, np.sum(Hu * Hu, axis=1)),
        ):
            mom = np.asarray(spectrum.quadrature_moment(rho.nodes, rho.weights, order))
            entry[f"moment{order}"] = {
                "slq_mean": float(np.mean(mom)),
                "slq_se": float(np.std(mom, ddof=1) / np.sqrt(probes)),
                "exact": want,
                "rel_error": float((np.mean(mom) - want) / abs(want)),
                "per_probe_max_rel_dev": float(np.max(np.abs(mom - per_probe) / np.abs(per_probe))),
            }
        moments[label] = entry
    print("\nSLQ moments (32 nodes per probe)")
    for e in moments.values():
        for order in (1, 2):
            m = e[f"moment{order}"]
            print(
                f"  {e['num_probes']:3d} probes, moment {order}: {m['slq_mean']:.6g} ± "
                f"{m['slq_se']:.2g} vs tr(H^{order})/N = {m['exact']:.6g} "
                f"(rel. error {m['rel_error']:+.2e}; per probe vs uᵀH^{order}u "
                f"{m['per_probe_max_rel_dev']:.1e})"
            )

    if args.json:
        report = {
            "width": args.width,
            "setup": (
                f"DCE, spiral 3×100 seed 0, A = 70, T = 5000, Γ at t = 2000, eta = 1, "
                f"{args.steps} GD steps from init seed 0, float64"
            ),
            "keys_per_setting": args.keys,
            "repeats": args.repeats,
            "reference": ref,
            "trace": rows,
            "hutchinson_over_hutchpp_rms": {str(b): r for b, r in ratios.items()},
            "verdict": verdict,
            "timing": timings,
            "dense_hessian_ms": dense_ms,
            "slq_moments": moments,
            "run_info": run_info(started, load_before),
        }
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
