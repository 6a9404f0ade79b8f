"""The anchor's case (central_flows_jax's ``examples/mlp.ipynb``) trained by RMSProp, beside
RMSProp's stable flow and central flow (:mod:`dynloss_jax.flows_rmsprop`).

    python -m experiments.central_flow_anchor_rmsprop --out docs/results/central_flow_anchor/rmsprop

Network, data, initial point and first eigenvector guesses are the anchor's
(:func:`experiments.central_flow_anchor.anchor_problem`, float64 from its float32 draws). The
optimiser is the project's RMSProp (ε outside the root, no bias correction) with decay ρ and
step η; ν₀ = g₀² (with the project's ν₀ = 0 the first steps are sign-like steps of size
η/√(1 − ρ) and the effective sharpness starts far above 2/η, where no flow applies). The
anchor has no RMSProp example: the numbers stand alone. ``summary.json`` holds the median relative
errors of the central flow's predicted loss and of the stable flow's loss against RMSProp's
loss averaged over a centred ``window``-step window (over all steps, and from the central
flow's onset on), the onsets, and the final effective sharpness and √ν of each process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SETTINGS = dict(
    eta=1e-3,
    rho=0.99,
    eps=1e-8,
    steps=1000,
    k=2,
    substeps=4,
    eig_iterations=4,
    edge_tol=1e-3,
    kappa=0.1,
    window=100,
    nu_term="hessian",
    # the anchor's data and network
    n=128,
    d=8,
    width=16,
    seed=0,
)
OUT = "results/central_flow_anchor_rmsprop"
PNG = "central_flow_anchor_rmsprop.png"


def run(s: dict) -> dict:
    import jax
    import numpy as np

    from dynloss_jax import central_flow as cf
    from dynloss_jax import flows_rmsprop as fr
    from experiments import central_flow_anchor as anchor

    loss_fn, w0, U0 = anchor.anchor_problem(dict(s, k=5))
    V0 = U0[:, : s["k"]]
    nu0 = jax.grad(loss_fn)(w0, 0.0) ** 2

    def solve(alpha, beta, mask):
        p = cf.solve(alpha, beta, mask)
        return p.X, p.residual

    program = jax.jit(
        lambda w0, nu0, V0: fr.run_rmsprop_flows(
            loss_fn,
            w0,
            nu0,
            V0,
            eta=s["eta"],
            rho=s["rho"],
            eps=s["eps"],
            n_steps=s["steps"],
            substeps=s["substeps"],
            eig_iterations=s["eig_iterations"],
            edge_tol=s["edge_tol"],
            kappa=s["kappa"],
            solve=solve,
            nu_term=s["nu_term"],
        )
    )
    _, rec = program(w0, nu0, V0)
    return {k: np.asarray(v) for k, v in rec._asdict().items()}


def summarise(a: dict, s: dict) -> dict:
    import numpy as np

    from experiments.central_flow import rel_err, smooth

    eta = s["eta"]
    avg = smooth(a["loss_rms"], s["window"])
    active = a["active"] > 0
    onset = int(np.argmax(active)) if active.any() else -1
    above = a["lam_rms"][:, 0] * eta > 2
    after = np.arange(len(avg)) >= max(onset, 0)

    def errors(keep):
        ref = np.where(keep, avg, np.nan)
        return {
            "central_rel_err": rel_err(a["predicted"], ref),
            "stable_rel_err": rel_err(a["loss_stable"], ref),
            "mid_rel_err": rel_err(a["loss_mid"], ref),
        }

    lam_c = a["lam_central"][after, 0] * eta if onset >= 0 else np.array([np.nan])
    return {
        **errors(np.ones_like(after)),
        "edge_phase": {"from_step": onset, **errors(after)},
        "onset": {
            "central_active": onset,
            "rmsprop_eta_lambda_above_2": int(np.argmax(above)) if above.any() else -1,
            "stable_eta_lambda_above_2": int(np.argmax(a["lam_stable"][:, 0] * eta > 2))
            if (a["lam_stable"][:, 0] * eta > 2).any()
            else -1,
        },
        "central_eta_lambda_after_onset": {
            "min": float(np.min(lam_c)),
            "max": float(np.max(lam_c)),
        },
        "active_max": int(a["active"].max()),
        "residual_max": float(np.max(a["residual"])),
        "final": {
            "loss_rms_averaged": float(avg[np.isfinite(avg)][-1]),
            "predicted": float(a["predicted"][-1]),
            "loss_central": float(a["loss_central"][-1]),
            "loss_stable": float(a["loss_stable"][-1]),
            "eta_lambda_rms": [float(v) for v in a["lam_rms"][-1] * eta],
            "eta_lambda_central": [float(v) for v in a["lam_central"][-1] * eta],
            "eta_lambda_stable": [float(v) for v in a["lam_stable"][-1] * eta],
            "root_nu_rms": float(a["root_nu_rms"][-1]),
            "root_nu_central": float(a["root_nu_central"][-1]),
            "root_nu_stable": float(a["root_nu_stable"][-1]),
        },
    }


def plot(a: dict, summary: dict, s: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from experiments.central_flow import smooth

    eta = s["eta"]
    steps = np.arange(len(a["loss_rms"]))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    ax.plot(steps, a["loss_rms"], color="0.75", lw=0.6, label="RMSProp")
    ax.plot(
        steps,
        smooth(a["loss_rms"], s["window"]),
        color="k",
        lw=1.4,
        label=f"RMSProp, {s['window']}-step average",
    )
    ax.plot(steps, a["loss_stable"], color="tab:blue", lw=1, label="stable flow")
    ax.plot(steps, a["loss_central"], color="tab:red", lw=0.8, alpha=0.6, label="central flow")
    ax.plot(
        steps,
        a["predicted"],
        color="tab:red",
        lw=1.4,
        ls="--",
        label="central flow (predicted average)",
    )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"median rel. error vs RMSProp's average: central "
        f"{summary['central_rel_err']:.3f}, stable {summary['stable_rel_err']:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for i in range(a["lam_rms"].shape[1]):
        ax.plot(steps, a["lam_rms"][:, i] * eta, color=f"C{i}", lw=0.6, alpha=0.8)
        ax.plot(steps, a["lam_stable"][:, i] * eta, color="tab:red", lw=0.8, ls="--", alpha=0.5)
        ax.plot(steps, a["lam_central"][:, i] * eta, color="k", lw=1.0, ls="--")
    ax.axhline(2, color="k", lw=0.8, ls=":")
    ax.plot([], [], color="C0", label="RMSProp")
    ax.plot([], [], color="tab:red", ls="--", label="stable flow")
    ax.plot([], [], color="k", ls="--", label="central flow")
    ax.set_ylim(0, 6)
    ax.set_xlabel("step")
    ax.set_ylabel("η · eigenvalues of P^{-1/2} H P^{-1/2}")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(steps, a["root_nu_rms"], color="0.5", lw=0.8, label="RMSProp")
    ax.plot(steps, a["root_nu_stable"], color="tab:blue", lw=1, label="stable flow")
    ax.plot(steps, a["root_nu_central"], color="tab:red", lw=1, ls="--", label="central flow")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean √ν")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"anchor MLP, RMSProp η = {eta:g}, ρ = {s['rho']}, ε = {s['eps']:g}, ν₀ = g₀²", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from experiments import common

    common.setup()
    import numpy as np

    from dynloss_jax import results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT)
    for key in ("eta", "rho", "eps"):
        p.add_argument(f"--{key}", type=float)
    for key in ("steps", "k", "substeps", "window"):
        p.add_argument(f"--{key}", type=int)
    p.add_argument("--nu-term", dest="nu_term", choices=("hessian", "reference", "none"))
    args = p.parse_args(argv)
    s = dict(SETTINGS)
    s.update({k: v for k, v in vars(args).items() if k != "out" and v is not None})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, load_before, at_start = common.run_start()
    arrays = run(s)
    summary = summarise(arrays, s)
    summary["settings"] = s
    np.savez_compressed(out / "arrays.npz", **arrays)
    results.write_json(out / common.SUMMARY, summary)
    results.write_json(out / common.RUN_INFO, common.run_info(started, load_before, at_start))
    plot(arrays, summary, s, out / PNG)
    e = summary["edge_phase"]
    print(
        f"all steps: central {summary['central_rel_err']:.4f} stable "
        f"{summary['stable_rel_err']:.4f}; from onset {e['from_step']}: central "
        f"{e['central_rel_err']:.4f} stable {e['stable_rel_err']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
