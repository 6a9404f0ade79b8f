"""The central flow under DCE on a short period: is its predicted trajectory converged in the
numerical settings, and where does it beat the stable flow and GD's midpoints?

    python -m benchmarks.central_flow_convergence            # the study (≈ 30 min on 2 cores)
    python -m benchmarks.central_flow_convergence --quick    # two settings, a shorter run

The case: DCE on the spiral (Fig. 2's network at width 32), A = 70, T = 300, η = 2 (2/η = 1),
one cycle of Γ (900 steps), seed 0: short enough that Γ changes within a few dozen steps, and
GD meets the edge near the ends of the second and third periods. Every setting runs
:func:`dynloss_jax.flows.run_flows` (GD, midpoints, stable flow, central flow in one program)
through :func:`experiments.central_flow.flows_of`.

Settings, each a change of one thing from the base (K = 3, 3 eigen-iterations, κ = 0.1):

* the active-set rule of the stored run (``activation="step"``: the directions within
  ``edge_tol`` of 2/η at each GD step's start, held for its substeps) at 2, 4, 8 and 16 RK4
  substeps per GD step, and at 2 substeps with K = 5 and with κ = 0;
* the matrix barrier (``activation="barrier"``: all K directions in the projection problem, the
  block kept at or below 2/η with the rate 1/dt) at 2, 4, 8 and 16 substeps, and at 2 substeps
  with 12 eigen-iterations and with K = 5;
* the matrix barrier with the eigenpairs (and so the held basis U) refreshed at every substep
  instead of once per GD step (``eig_every="substep"``), ``barrier_refresh_sub<n>``.

``--only NAME ...`` runs those settings and adds them to the stored arrays (a study in several
sittings); the JSON is then recomputed from all stored settings.

The reference for GD's time-averaged loss is fixed before any comparison was made:
ℓ̄_k = (L_{k−1} + 2L_k + L_{k+1})/4, a centred window of one period-2 cycle, which cancels a
period-2 oscillation exactly and is biased only by the curvature of the trend over two steps (a
100-step window is not usable when Γ changes within a few dozen steps). A centred 10-step window
(T/30) is stored beside it as a sensitivity check only. A step is *at the edge* when GD's λ1 ≥
0.95·2/η, *off the edge* otherwise.

Per setting ``convergence.json`` holds: the runtime; the flow's max ηλ1/2 and the steps with
ηλ1/2 > 1.05 and > 1.01 (with how many directions were active there); the max over steps of
|ℓ̂ − ℓ̂_ref|/ℓ̂_ref against the finest setting of each rule (16 substeps); and the median and
max relative errors against ℓ̄ of the central flow's prediction, the stable flow's loss and the
midpoints' loss, at the edge and off it. ``successive_substeps``: the same change between
consecutive substep counts of a rule, the step where it peaks, and how many steps move by more
than 1 % and 0.1 %, at the edge and off it.
``arrays.npz`` keeps per setting the predicted loss, the stable flow's loss, the flow's λ1 and
the active count (under the barrier every direction is in the problem, so this is K), and
GD's loss and λ1 and the midpoints' loss once (written after every
setting; ``--summarise`` recomputes the JSON from it). ``stored_run_errors``: the stored run
at Fig. 2's settings (T = 5000, η = 1) read with the same reference and edge split.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dynloss_jax.environment import source
from experiments.central_flow import FULL as FIG2_FLOW

OUT = "docs/results/central_flow/convergence"
# Fig. 2's central-flow settings (experiments.central_flow.FULL) on a short period
CASE = dict(FIG2_FLOW, losses=("dce",), width=32, period=300, eta=2.0, piece=300, activation="step")
AT_EDGE = 0.95  # GD's ηλ1/2 at or above this: a step at the edge
SENSITIVITY_WINDOW = 10


def settings_list(quick: bool) -> dict:
    """``{name: settings}``: the base case with one thing changed (see the module docstring)."""
    runs = {}
    for n in (2, 4):
        for rule in ("step", "barrier"):
            runs[f"{rule}_sub{n}"] = dict(CASE, activation=rule, substeps=n)
    if not quick:
        for n in (8, 16):
            for rule in ("barrier", "step"):
                runs[f"{rule}_sub{n}"] = dict(CASE, activation=rule, substeps=n)
        # one thing changed from the base at 2 substeps
        runs["step_sub2_k5"] = dict(CASE, activation="step", k=5)
        runs["step_sub2_kappa0"] = dict(CASE, activation="step", kappa=0.0)
        runs["barrier_sub2_eig12"] = dict(CASE, activation="barrier", eig_iterations=12)
        runs["barrier_sub2_k5"] = dict(CASE, activation="barrier", k=5)
        for n in (2, 4, 8, 16):  # the eigenpairs refreshed at every substep
            runs[f"barrier_refresh_sub{n}"] = dict(
                CASE, activation="barrier", substeps=n, eig_every="substep"
            )
    return runs


def reference(loss_T):
    """ℓ̄_k = (L_{k−1} + 2L_k + L_{k+1})/4; NaN at the two ends."""
    import numpy as np

    x = np.asarray(loss_T, float)
    out = np.full_like(x, np.nan)
    out[1:-1] = 0.25 * (x[:-2] + 2.0 * x[1:-1] + x[2:])
    return out


def rel(pred_T, ref_T):
    import numpy as np

    return np.abs(np.asarray(pred_T) - ref_T) / np.abs(ref_T)


def split_errors(pred_T, ref_T, at_edge_T) -> dict:
    """Median and max relative error at the edge and off it (finite reference only)."""
    import numpy as np

    r = rel(pred_T, ref_T)
    ok = np.isfinite(r)
    out = {}
    for name, sel in (("at_edge", ok & at_edge_T), ("off_edge", ok & ~at_edge_T), ("all", ok)):
        out[name] = {
            "median": float(np.median(r[sel])) if sel.any() else None,
            "max": float(np.max(r[sel])) if sel.any() else None,
            "steps": int(sel.sum()),
        }
    return out


def max_change(a_T, b_T) -> float:
    """max over steps of |a − b|/|b|."""
    import numpy as np

    return float(np.max(np.abs(np.asarray(a_T) - b_T) / np.abs(b_T)))


def escape(lam_T, active_T, eta: float) -> dict:
    import numpy as np

    h = np.asarray(lam_T) * eta / 2
    out = {"max_eta_lam1_over_2": float(h.max())}
    for level in (1.05, 1.01):
        sel = h > level
        out[f"steps_above_{level}"] = int(sel.sum())
        out[f"active_count_above_{level}"] = {
            str(c): int(n) for c, n in enumerate(np.bincount(np.asarray(active_T)[sel].astype(int)))
        }
    return out


def run_setting(s: dict) -> tuple[dict, float]:
    from experiments import central_flow as cf

    started = time.perf_counter()
    a = cf.run_one(s, "dce", quiet=True)
    return a, time.perf_counter() - started


def pack(packed: dict, name: str, a: dict) -> None:
    """Adds one setting's arrays to ``packed`` (GD's and the other processes' once)."""
    if "gd__loss" not in packed:
        packed["gd__loss"] = a["loss_gd"]
        packed["gd__lam1"] = a["lam_gd"][:, 0]
        packed["mid__loss"] = a["loss_mid"]
    packed[f"{name}__stable_loss"] = a["loss_stable"]
    packed[f"{name}__predicted"] = a["predicted"]
    packed[f"{name}__lam1"] = a["lam_central"][:, 0]
    packed[f"{name}__active"] = a["active"]


def finest_of(names, rule: str):
    """The setting of ``rule`` with the most substeps (others at the base)."""
    subs = [n for n in names if n.startswith(rule + "_sub") and n[len(rule) + 4 :].isdigit()]
    return max(subs, key=lambda n: int(n[len(rule) + 4 :]), default=None)


def summarise(runs: dict, packed: dict, eta: float) -> dict:
    """The numbers of ``convergence.json`` from the packed arrays (see the module docstring)."""
    import numpy as np

    from experiments.central_flow import smooth

    names = [n for n in runs if f"{n}__predicted" in packed]
    ref = reference(packed["gd__loss"])
    ref10 = smooth(packed["gd__loss"], SENSITIVITY_WINDOW)
    at_edge = packed["gd__lam1"] * eta / 2 >= AT_EDGE
    finest = {rule: finest_of(names, rule) for rule in ("step", "barrier")}
    out = {}
    for name in names:
        s = runs[name]
        pred = packed[f"{name}__predicted"]
        entry = {
            "settings": {
                k: s.get(k, "step")
                for k in ("activation", "substeps", "eig_iterations", "k", "kappa", "eig_every")
            },
            **escape(packed[f"{name}__lam1"], packed[f"{name}__active"], eta),
            "max_predicted": float(np.max(pred)),
            "final_predicted": float(pred[-1]),
            "central": split_errors(pred, ref, at_edge),
            "stable": split_errors(packed[f"{name}__stable_loss"], ref, at_edge),
            "central_window_10": split_errors(pred, ref10, at_edge),
            "rule_finest": finest[s["activation"]],
        }
        for f in finest.values():
            if f is not None:
                entry[f"max_change_vs_{f}"] = max_change(pred, packed[f"{f}__predicted"])
        out[name] = entry
    successive = {}
    for rule in ("step", "barrier", "barrier_refresh"):
        subs = sorted(
            (int(n[len(rule) + 4 :]), n)
            for n in names
            if n.startswith(rule + "_sub") and n[len(rule) + 4 :].isdigit()
        )
        for (_, a), (_, b) in zip(subs, subs[1:], strict=False):
            pa, pb = packed[f"{a}__predicted"], packed[f"{b}__predicted"]
            c = np.abs(pa - pb) / np.abs(pb)
            successive[f"{a}_vs_{b}"] = {
                "max_change": float(c.max()),
                "at_step": int(c.argmax()),
                "steps_over_0.01": int((c > 0.01).sum()),
                "steps_over_0.001": int((c > 0.001).sum()),
                "median_change": float(np.median(c)),
                "max_change_at_edge": float(c[at_edge].max()) if at_edge.any() else None,
                "max_change_off_edge": float(c[~at_edge].max()),
            }
    gd = {
        "at_edge_steps": int(at_edge.sum()),
        "steps": int(at_edge.size),
        "max_eta_lam1_over_2": float(np.max(packed["gd__lam1"]) * eta / 2),
        "midpoints": split_errors(packed["mid__loss"], ref, at_edge),
        "midpoints_window_10": split_errors(packed["mid__loss"], ref10, at_edge),
        "max_reference": float(np.nanmax(ref)),
        "final_reference": float(ref[-2]),
    }
    return {"settings": out, "successive_substeps": successive, "gd": gd}


def diagnose(s: dict) -> dict:
    """The central flow alone, step by step at the settings ``s``, with what the compiled
    program does not record: per GD step the Ritz eigenvalues used for the active set, the
    projection's residual, the eigen-residuals ‖Hu − λu‖, the held block's diagonal F = UᵀHU at
    the step's start and end (U held over the step), the largest eigenvalue of the block at the
    end, and — where the Ritz ηλ1/2 exceeds 0.9 — the dense Hessian's top eigenvalues at the
    step's start (staleness of the Ritz values) and end (what the step did to the true λ1)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dynloss_jax import central_flow, flows
    from experiments import central_flow as cf

    loss_fn, w0, U0, _ = cf.spiral_problem(s, "dce")
    eta, n = s["eta"], s["substeps"]
    dt = eta / n
    kappa = 1.0 / dt if s["activation"] == "barrier" else s["kappa"] / eta

    def solve(alpha, beta, mask):
        p = central_flow.solve(alpha, beta, mask)
        return p.X, p.residual

    def block(w, t, U):
        HU = jax.vmap(lambda v: flows.hvp(loss_fn, w, t, v), in_axes=1, out_axes=1)(U)
        F = U.T @ HU
        return 0.5 * (F + F.T)

    @jax.jit
    def step(w, U, k):
        t = eta * k.astype(w.dtype)
        lam, Uc, eres = flows.top_eigs(loss_fn, w, t, U, s["eig_iterations"])

        def velocity(y, r):
            return flows.central_velocity(
                loss_fn,
                y,
                r,
                Uc,
                lam,
                eta=eta,
                edge_tol=s["edge_tol"],
                kappa=kappa,
                solve=solve,
                activation=s["activation"],
            )

        crit = velocity(w, t)[1]
        w_end = jax.lax.fori_loop(
            0, n, lambda j, x: flows._rk4(lambda y, r: velocity(y, r)[0], x, t + j * dt, dt), w
        )
        F_end = block(w_end, t + eta, Uc)
        return (
            w_end,
            Uc,
            {
                "lam": lam,
                "active": crit.mask_K.sum() * (jnp.trace(crit.X_KxK) > 0),
                "masked": crit.mask_K.sum(),
                "residual": crit.residual,
                "eig_residual": eres,
                "F_start": jnp.diagonal(crit.F_KxK),
                "F_end": jnp.diagonal(F_end),
                "F_end_max": jnp.linalg.eigvalsh(F_end)[-1],
            },
        )

    @jax.jit
    def dense_top(w, k):
        return jnp.linalg.eigvalsh(jax.hessian(loss_fn)(w, eta * k.astype(w.dtype)))[::-1][:2]

    h = eta / 2
    w, U, rows = w0, U0, []
    for k in range(cf.n_steps(s)):
        w_new, U, r = step(w, U, jnp.asarray(k))
        r = {a: np.asarray(b) for a, b in r.items()}
        row = {"step": k, "lam1": float(r["lam"][0] * h), "lam2": float(r["lam"][1] * h)}
        row.update(
            active=int(r["active"]),
            masked=int(r["masked"]),
            residual=float(r["residual"]),
            eig_residual_max=float(r["eig_residual"].max()),
            F11_start=float(r["F_start"][0] * h),
            F11_end=float(r["F_end"][0] * h),
            F22_end=float(r["F_end"][1] * h),
            block_max_end=float(r["F_end_max"] * h),
        )
        if row["lam1"] > 0.9:
            row["dense_lam1_start"] = float(dense_top(w, jnp.asarray(k))[0] * h)
            row["dense_lam1_end"] = float(dense_top(w_new, jnp.asarray(k + 1))[0] * h)
        rows.append(row)
        w = w_new
    lam1 = np.array([r["lam1"] for r in rows])
    dense = [r for r in rows if "dense_lam1_start" in r]
    # an escape step: the flow's λ1 rises by more than 1 % of 2/η in one GD step to above it
    jumps = [
        rows[k] for k in range(len(rows) - 1) if lam1[k + 1] - lam1[k] > 0.01 and lam1[k + 1] > 1.0
    ]
    return {
        "settings": {k: s[k] for k in ("activation", "substeps", "eig_iterations", "k", "kappa")},
        "max_eta_lam1_over_2": float(lam1.max()),
        "steps_above_1.05": int((lam1 > 1.05).sum()),
        "ritz_minus_dense_lam1_max_abs": max(abs(r["lam1"] - r["dense_lam1_start"]) for r in dense),
        "residual_max": max(r["residual"] for r in rows),
        "escape_steps": [
            {
                **r,
                "held_drift": r["F11_end"] - r["F11_start"],
                "coupling": r["block_max_end"] - max(r["F11_end"], r["F22_end"]),
                "outside_span": r.get("dense_lam1_end", float("nan")) - r["block_max_end"],
            }
            for r in jumps
        ],
        "steps_at_edge": dense,
    }


def diagnose_stored(path: Path, eta: float = 1.0) -> dict:
    """The stored run at Fig. 2's settings (step rule): where its DCE flow's λ1 leaves the edge.
    Counts the steps above 1.05·2/η by active count, the one-step rises of ηλ1/2 by more than
    0.05 and the state before each (active count, λ1, λ2), and the steps above 1.05·2/η with a
    second eigenvalue at 0.9–0.999 of 2/η (near the edge but outside the per-step mask)."""
    import numpy as np

    a = np.load(path)
    lam = a["dce__lam_central"] * eta / 2
    act = a["dce__active"]
    above = lam[:, 0] > 1.05
    d = np.diff(lam[:, 0])
    rises = np.flatnonzero(d > 0.05)
    near2 = above & (lam[:, 1] >= 0.9) & (lam[:, 1] < 0.999)
    return {
        "steps_above_1.05": int(above.sum()),
        "active_count_above_1.05": {str(c): int(n) for c, n in enumerate(np.bincount(act[above]))},
        "rises_over_0.05": [
            {
                "step": int(k),
                "lam1_before": float(lam[k, 0]),
                "lam1_after": float(lam[k + 1, 0]),
                "lam2_before": float(lam[k, 1]),
                "active_before": int(act[k]),
            }
            for k in rises
        ],
        "steps_above_1.05_with_lam2_0.9_to_0.999": int(near2.sum()),
        "steps_above_1.05_with_one_active_and_lam2_0.9_to_0.999": int((near2 & (act == 1)).sum()),
    }


def stored_errors(path: Path, eta: float = 1.0) -> dict:
    """The stored run at Fig. 2's settings (``docs/results/central_flow/arrays.npz``) read with
    this study's reference and edge split: per loss, the central flow's, the stable flow's and
    the midpoints' relative errors against (L_{k−1} + 2L_k + L_{k+1})/4, at the edge (GD's
    ηλ1/2 ≥ 0.95) and off it."""
    import numpy as np

    a = np.load(path)
    out = {}
    for loss in ("ce", "dce"):
        ref = reference(a[f"{loss}__loss_gd"])
        at_edge = a[f"{loss}__lam_gd"][:, 0] * eta / 2 >= AT_EDGE
        out[loss] = {
            "at_edge_steps": int(at_edge.sum()),
            "steps": int(at_edge.size),
            "central": split_errors(a[f"{loss}__predicted"], ref, at_edge),
            "stable": split_errors(a[f"{loss}__loss_stable"], ref, at_edge),
            "midpoints": split_errors(a[f"{loss}__loss_mid"], ref, at_edge),
        }
    return out


def main(argv=None) -> int:
    from experiments import common

    common.setup()
    import numpy as np

    from dynloss_jax import results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true", help="two substep counts per rule")
    p.add_argument("--only", nargs="+", help="run only these settings (names as in the JSON)")
    p.add_argument(
        "--diagnose",
        nargs="+",
        choices=("step", "barrier"),
        help="write diagnosis.json: the stored run's escapes and a step-by-step run of the "
        "short-period case under these rules (2 substeps)",
    )
    p.add_argument(
        "--summarise", action="store_true", help="recompute the JSON from the stored arrays"
    )
    args = p.parse_args(argv)
    at_start = source()  # the code that runs
    commit, dirty = at_start["git_commit"], at_start["git_dirty"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = settings_list(args.quick)
    if args.summarise:
        loaded = np.load(out / "arrays.npz")
        packed = {k: loaded[k] for k in loaded.files}
        path = out / "convergence.json"
        summary = results.read_json(path) if path.exists() else {}
        fresh = summarise(runs, packed, CASE["eta"])
        for name, entry in fresh["settings"].items():
            old = summary.get("settings", {}).get(name, {})
            for key in ("runtime_s", "load_avg_after"):
                entry[key] = old.get(key)
        summary.update(fresh)
        summary["stored_run_errors"] = stored_errors(Path("docs/results/central_flow/arrays.npz"))
        results.write_json(out / "convergence.json", summary)
        return 0
    if args.diagnose:
        started, load_before = time.time(), os.getloadavg()
        out_d = {
            "stored_run": diagnose_stored(Path("docs/results/central_flow/arrays.npz")),
            "short_period": {rule: diagnose(dict(CASE, activation=rule)) for rule in args.diagnose},
        }
        info = common.run_info(started, load_before)
        info["commit"], info["uncommitted_changes"] = commit, dirty
        out_d["run_info"] = info
        results.write_json(out / "diagnosis.json", out_d)
        print(f"wrote {out / 'diagnosis.json'}")
        return 0
    if args.only:
        runs = {k: runs[k] for k in args.only}  # in the order given
    started, load_before = time.time(), os.getloadavg()
    packed, runtimes, loads, sittings = {}, {}, {}, []
    path = out / "convergence.json"
    if args.only and (out / "arrays.npz").exists():  # add to the stored settings
        loaded = np.load(out / "arrays.npz")
        packed = {k: loaded[k] for k in loaded.files}
        old = results.read_json(path) if path.exists() else {}
        for name, entry in old.get("settings", {}).items():
            runtimes[name], loads[name] = entry.get("runtime_s"), entry.get("load_avg_after")
        sittings = old.get("sittings", [])
    for name, s in runs.items():
        a, dt = run_setting(s)
        pack(packed, name, a)
        runtimes[name], loads[name] = round(dt, 1), list(os.getloadavg())
        results.atomic_write_npz(out / "arrays.npz", {k: np.asarray(v) for k, v in packed.items()})
        h = a["lam_central"][:, 0] * s["eta"] / 2
        print(
            f"{name}: {dt:.0f} s, max ηλ1/2 {h.max():.4f}, load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    summary = summarise(settings_list(args.quick), packed, CASE["eta"])
    summary["stored_run_errors"] = stored_errors(Path("docs/results/central_flow/arrays.npz"))
    for name in summary["settings"]:
        summary["settings"][name]["runtime_s"] = runtimes.get(name)
        summary["settings"][name]["load_avg_after"] = loads.get(name)
    summary["case"] = {k: v for k, v in CASE.items() if k not in ("activation", "window", "piece")}
    summary["reference"] = (
        "GD's loss smoothed by the centred weights (1, 2, 1)/4 over steps k-1, k, k+1 (chosen "
        "before the comparison); a step is at the edge when GD's eta*lambda1/2 >= 0.95"
    )
    info = common.run_info(started, load_before)
    info["commit"], info["uncommitted_changes"] = commit, dirty
    info["settings_run"] = list(runs)
    summary["sittings"] = [*sittings, info]
    summary["run_info"] = info
    results.write_json(out / "convergence.json", summary)
    print(f"wrote {out / 'convergence.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
