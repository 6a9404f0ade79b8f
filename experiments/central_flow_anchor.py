"""Beyond the paper: the central flow's own example case, a static loss, against gradient descent.

    python -m experiments.central_flow_anchor --quick     # ≤ 3 min on 2 CPU cores
    python -m experiments.central_flow_anchor             # the anchor's full 1000 steps

The public implementation of central flows (alex-damian/central_flows_jax, the reference of
Cohen, Damian et al., ICLR 2025) ships one worked example, ``examples/mlp.ipynb``, whose figure
is its README's: a swish MLP 8 → 16 → 16 → 1 (flax ``nnx.Linear`` layers with their default
initialisation) fitted by mean squared error, without the factor ½, to 128 Gaussian inputs in
ℝ⁸ with Gaussian targets, all drawn from ``nnx.Rngs(0)``, trained by GD with η = 0.1 for 1000
steps, five Hessian directions tracked. This module builds the same network, data and initial
point — drawn from the same random stream in float32, as the example draws them, then cast to
float64 — and runs the project's :func:`dynloss_jax.flows.run_flows` on it: GD, its midpoints,
the stable flow and the central flow in one compiled scan, with a loss that ignores t.
What the example shows (its figure): GD's sharpness rises to 2/η near step 350, overshoots,
and after a few catapults settles at 2/η; the central flow's sharpness reaches 2/η at the
same step and stays there; its predicted time-averaged loss lies on GD's loss smoothed by a
Gaussian of σ = 50 steps, while the stable flow's loss falls below both.

``summary.json`` holds the keys of :mod:`experiments.central_flow` (for its one case, at the top
level): ``central_rel_err`` / ``stable_rel_err`` / ``mid_rel_err`` against GD's loss averaged
over a centred ``window``-step window (100, fixed before the run), ``sensitivity`` (windows of
20 and 500), ``onset``, ``tracking`` and ``final``; and beside them

* ``edge_phase``: the same three errors over the steps from the central flow's onset on
  (before it the four processes coincide, which dilutes the median over the run);
* ``anchor_smoothing``: the errors against the example's own average, a Gaussian filter of
  σ = ``sigma`` steps with edge values repeated, compared from step 2σ on as its figure draws it;
* ``gd_float32``: GD run again in float32, the example's precision, from the same point, with
  its top eigenvalue at its midpoints (w_k + w_{k+1})/2, where the example measures it: its
  median relative difference from the float64 run before the onset and of the averaged losses
  after it (at the edge GD is chaotic and its catapults start from rounding noise: the two
  precisions' catapults part, their averages do not), the central flow's error against it, its
  catapults (steps and losses), when ηλ1 first passes 2, its peak and final ηλ1;
  ``gd_float64``: the catapults and the peak ηλ1 of the float64 run;
* ``published``: what the example's figure shows, read off it by eye (it states no numbers).

``arrays.npz`` keeps every per-step record (and ``loss_gd32``, ``lam_gd32_mid``);
``central_flow_anchor.png`` shows the loss of GD, its averages, the stable flow, the central flow
and its prediction, and the top eigenvalues of GD, the stable flow and the central flow against
2/η, as the example does (there in η-scaled units, ηλ against 2).

What differs from the example, besides the code: float64 throughout (the data and initial point
are the example's float32 values); the flows are integrated by RK4 (the example takes Euler
steps, four per GD step for the central flow); the central flow's block holds the directions
within ``edge_tol`` of 2/η and relaxes drift at rate κ = ``kappa`` per step (the example passes
all five directions to its complementarity problem, which asks that none pass 2/η after the
next Euler step, a relaxation at κ = 4 per step); GD's eigenvalues are taken at w_k (the example
takes them at the midpoints of consecutive iterates, as ``gd_float32`` does here).
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments import central_flow, common

FULL = dict(
    n=128,
    d=8,
    width=16,
    eta=0.1,
    steps=1000,
    seed=0,
    k=5,
    substeps=4,
    eig_iterations=4,
    edge_tol=1e-3,
    kappa=0.1,
    window=100,
    sigma=50,
    piece=250,
)
QUICK = dict(FULL, steps=600, k=3, piece=200)
# a larger step puts GD at the edge after ~25 steps (2/η = 5): the smallest run that sees it
SMOKE = dict(FULL, eta=0.4, steps=60, k=2, substeps=2, window=10, sigma=5, piece=60)
OUT = "results/central_flow_anchor"
PNG = "central_flow_anchor.png"
ARRAYS = "arrays.npz"
ANCHOR = {
    "repository": "alex-damian/central_flows_jax",
    "file": "examples/mlp.ipynb",
    "figure": "examples/example.png (also the repository's README figure)",
}
# read off examples/example.png (the η-scaled eigenvalues ηλ there are plotted against 2)
PUBLISHED = {
    "central_reaches_edge_step": 350,
    "gd_first_above_edge_step": 350,
    "gd_peak_eta_lambda": 2.5,
    "gd_peak_step": 420,
    "gd_catapult_steps": [420, 500, 555, 600, 640, 680],
    "gd_catapult_losses": [">1", 0.72, 0.47, 0.32, 0.25, 0.2],
    "gd_settles_at_edge_step": 700,
    "final_loss_smoothed_gd": 0.10,
    "final_loss_central_prediction": 0.10,
    "final_loss_central_point": 0.06,
    "final_loss_stable": 0.035,
    "claim": "the central flow's predicted loss lies on GD's Gaussian-smoothed loss (σ = 50) "
    "from the onset to step 1000; the stable flow's falls below it; the central flow's ηλ1 "
    "stays at 2 after step ~350 while the stable flow's passes 4",
}


def add_flags(p):
    p.add_argument("--eta", type=float, help="learning rate (default 0.1)")
    p.add_argument("--steps", type=int, help="GD steps (default 1000)")
    p.add_argument("--seed", type=int, help="seed of nnx.Rngs (default 0)")
    p.add_argument("--k", type=int, help="top eigenvalues tracked (default 5)")
    p.add_argument("--substeps", type=int, help="RK4 steps per GD step (default 4)")
    p.add_argument("--window", type=int, help="smoothing window of GD's loss (default 100)")


def anchor_data(s: dict):
    """(x, y, model, U0) in float32, drawn as the anchor's example draws them: inputs, targets,
    then the three layers from one ``nnx.Rngs(seed)`` stream, then the start of the eigenvector
    iterations."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    f32 = jnp.float32
    rngs = nnx.Rngs(s["seed"])
    x = jax.random.normal(rngs(), (s["n"], s["d"]), f32)
    y = jax.random.normal(rngs(), (s["n"],), f32)
    m = s["width"]
    model = nnx.Sequential(
        nnx.Linear(s["d"], m, rngs=rngs),
        nnx.swish,
        nnx.Linear(m, m, rngs=rngs),
        nnx.swish,
        nnx.Linear(m, 1, rngs=rngs),
        lambda h: h[..., 0],
    )
    n_params = (s["d"] + 1) * m + (m + 1) * m + m + 1
    U0 = jax.random.normal(rngs(), (n_params, s["k"]), f32)
    return x, y, model, U0


def anchor_problem(s: dict, dtype="float64"):
    """(loss_fn(w, t), w0, U0) in ``dtype``: the example's mean squared error of its network
    over its data, a static loss (t is ignored)."""
    import jax.numpy as jnp
    from flax import nnx
    from jax.flatten_util import ravel_pytree

    x, y, model, U0 = anchor_data(s)
    graphdef, params = nnx.split(model)
    w0, unravel = ravel_pytree(params)
    x, y = x.astype(dtype), y.astype(dtype)

    def loss_fn(w, t):
        del t  # static loss
        out = nnx.merge(graphdef, unravel(w))(x)
        return jnp.mean((out - y) ** 2)

    U0 = jnp.linalg.qr(U0.astype(dtype))[0]
    return loss_fn, w0.astype(dtype), U0


def run_flows_anchor(s: dict, quiet: bool, checkpoint=None) -> dict:
    """The four processes on the anchor's case in compiled pieces
    (:func:`experiments.central_flow.run_pieces`, with its checkpoints); the records as NumPy
    arrays (leading axis: step), with ``loss_gd32``, GD's loss in float32."""
    loss_fn, w0, U0 = anchor_problem(s)
    total = s["steps"]
    piece = central_flow.piece_length(total, s["piece"])
    advance, state = central_flow.flows_program(loss_fn, w0, U0, s, piece)
    out = central_flow.run_pieces(
        advance,
        state,
        total,
        piece,
        progress=central_flow.printer("central_flow_anchor", quiet),
        checkpoint=checkpoint,
    )
    out["loss_gd32"], out["lam_gd32_mid"] = gd_float32(s)
    return out


def gd_float32(s: dict):
    """GD in float32, the anchor's precision, from the anchor's initial point: its loss at every
    step and the top Hessian eigenvalue at its midpoints (w_k + w_{k+1})/2, where the anchor's
    figure measures GD's eigenvalues (warm-started subspace iteration, as in the flows)."""
    import jax
    import numpy as np

    from dynloss_jax import flows

    loss_fn, w0, U0 = anchor_problem(s, "float32")
    eta = np.asarray(s["eta"], "float32")

    @jax.jit
    def run(w, u):
        def step(carry, _):
            w, u = carry
            loss, g = jax.value_and_grad(loss_fn)(w, 0.0)
            w_next = w - eta * g
            lam, u, _ = flows.top_eigs(loss_fn, 0.5 * (w + w_next), 0.0, u, 4)
            return (w_next, u), (loss, lam[0])

        return jax.lax.scan(step, (w, u), None, length=s["steps"])[1]

    loss, lam = run(w0, U0[:, :1])
    return np.asarray(loss), np.asarray(lam)


def gaussian_smooth(x_T, sigma: float):
    """A Gaussian filter of ``sigma`` steps, truncated at 4σ, the ends extended by their edge
    values: the smoothing of the anchor's figure (scipy's ``gaussian_filter1d``, mode
    "nearest")."""
    import numpy as np

    x = np.asarray(x_T, float)
    r = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(x, r, mode="edge"), kernel, mode="valid")


def catapults(loss_T, factor: float = 1.3, half: int = 30) -> list[int]:
    """The steps of GD's catapults: local maxima of the loss more than ``factor`` times its
    median over the ``half`` steps either side."""
    import numpy as np

    x = np.asarray(loss_T, float)
    return [
        i
        for i in range(1, len(x) - 1)
        if x[i] >= x[i - 1]
        and x[i] >= x[i + 1]
        and x[i] > factor * np.median(x[max(0, i - half) : i + half])
    ]


def first_above(lam_T, edge: float) -> int:
    import numpy as np

    idx = np.flatnonzero(np.asarray(lam_T) > edge)
    return int(idx[0]) if idx.size else -1


def summarise(a: dict, s: dict) -> dict:
    """The numbers of the run from its per-step arrays ``a`` (see the module docstring)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():  # a sensitivity window longer than a short run: empty
        warnings.simplefilter("ignore", RuntimeWarning)
        r = central_flow.summarise_loss(a, s)
    r["sensitivity"] = {w: v for w, v in r["sensitivity"].items() if int(w) < s["steps"]}
    onset = r["onset"]["central_active"]
    after = np.arange(len(a["loss_gd"])) >= max(onset, 0)

    def errors(ref, keep):
        ref = np.where(keep, ref, np.nan)
        return {
            "central_rel_err": central_flow.rel_err(a["predicted"], ref),
            "stable_rel_err": central_flow.rel_err(a["loss_stable"], ref),
            "mid_rel_err": central_flow.rel_err(a["loss_mid"], ref),
        }

    steps = np.arange(len(a["loss_gd"]))
    box = central_flow.smooth(a["loss_gd"], s["window"])
    gauss = gaussian_smooth(a["loss_gd"], s["sigma"])
    r["edge_phase"] = {"from_step": onset, **errors(box, after)}
    r["anchor_smoothing"] = {
        "sigma": s["sigma"],
        "from_step": 2 * s["sigma"],
        **errors(gauss, steps >= 2 * s["sigma"]),
        "edge_phase": errors(gauss, after & (steps >= 2 * s["sigma"])),
    }
    g32, eta = a["loss_gd32"], s["eta"]
    smooth32 = central_flow.smooth(g32, s["window"])
    peaks32, peaks64 = catapults(g32), catapults(a["loss_gd"])
    lam32 = a["lam_gd32_mid"] * eta
    r["gd_float32"] = {
        "rel_diff_before_onset": central_flow.rel_err(np.where(after, np.nan, g32), a["loss_gd"]),
        "rel_diff_smoothed_after_onset": central_flow.rel_err(
            np.where(after, smooth32, np.nan), box
        ),
        "central_rel_err": central_flow.rel_err(a["predicted"], smooth32),
        "central_rel_err_edge_phase": central_flow.rel_err(
            np.where(after, a["predicted"], np.nan), smooth32
        ),
        "final_loss": float(g32[-1]),
        "catapult_steps": peaks32,
        "catapult_losses": [float(g32[i]) for i in peaks32],
        "lam_mid_above": first_above(lam32, 2.0),
        "peak_eta_lambda_mid": float(lam32.max()),
        "peak_step": int(lam32.argmax()),
        "final_eta_lambda_mid": float(lam32[-1]),
    }
    r["onset"]["gd_first_catapult"] = peaks64[0] if peaks64 else -1
    r["gd_float64"] = {
        "catapult_steps": peaks64,
        "catapult_losses": [float(a["loss_gd"][i]) for i in peaks64],
        "peak_eta_lambda": float(a["lam_gd"][:, 0].max() * eta),
        "peak_step": int(a["lam_gd"][:, 0].argmax()),
    }
    r["final"]["loss_central"] = float(a["loss_central"][-1])
    r["final"]["smoothed_gd_gaussian"] = float(gauss[-1])
    r["final"]["eta_lambda_stable"] = float(a["lam_stable"][-1, 0] * s["eta"])
    r["final"]["eta_lambda_central"] = float(a["lam_central"][-1, 0] * s["eta"])
    return r


def plot(a: dict, summary: dict, s: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    eta = s["eta"]
    steps = np.arange(len(a["loss_gd"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    ax.plot(steps, a["loss_gd"], color="0.75", lw=0.6, label="GD")
    ax.plot(
        steps,
        a["loss_gd32"],
        color="tab:purple",
        lw=0.5,
        alpha=0.5,
        label="GD in float32 (the anchor's precision)",
    )
    ax.plot(
        steps,
        central_flow.smooth(a["loss_gd"], s["window"]),
        color="k",
        lw=1.4,
        label=f"GD, {s['window']}-step average",
    )
    lo = 2 * s["sigma"]
    ax.plot(
        steps[lo:],
        gaussian_smooth(a["loss_gd"], s["sigma"])[lo:],
        color="tab:green",
        lw=1,
        ls=":",
        label=f"GD, Gaussian σ = {s['sigma']} (the anchor's average)",
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
    top = float(np.nanmax(a["loss_gd"][: max(1, len(steps) // 10)]))
    ax.set_ylim(0, min(1.0, 1.05 * top) if top > 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean squared error)")
    ax.set_title(
        f"median rel. error vs GD's average: central {summary['central_rel_err']:.3f}, "
        f"stable {summary['stable_rel_err']:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    k = a["lam_gd"].shape[1]
    for i in range(k):
        ax.plot(steps, a["lam_gd"][:, i], color=f"C{i}", lw=0.7, alpha=0.8)
        ax.plot(steps, a["lam_stable"][:, i], color="tab:red", lw=0.8, ls="--", alpha=0.5)
        ax.plot(steps, a["lam_central"][:, i], color="k", lw=1.0, ls="--")
    ax.plot(steps, a["lam_gd32_mid"], color="tab:purple", lw=0.8, alpha=0.7)
    ax.axhline(2 / eta, color="k", lw=0.8, ls=":")
    ax.plot([], [], color="C0", lw=0.7, label=f"GD (top {k})")
    ax.plot([], [], color="tab:purple", lw=0.8, label="GD in float32, λ1 at midpoints")
    ax.plot([], [], color="tab:red", ls="--", label="stable flow")
    ax.plot([], [], color="k", ls="--", label="central flow")
    ax.plot([], [], color="k", ls=":", label="2/η")
    ax.set_ylim(0, 2 * 2 / eta)
    ax.set_xlabel("step")
    ax.set_ylabel("top Hessian eigenvalues")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"central_flows_jax's example: swish MLP {s['d']}→{s['width']}→{s['width']}→1, "
        f"MSE on {s['n']} Gaussian points, GD η = {eta:g}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(r: dict) -> str:
    o, e, g = r["onset"], r["edge_phase"], r["anchor_smoothing"]
    return "\n".join(
        [
            f"{'':22s} {'central':>8s} {'stable':>8s} {'midpts':>8s}",
            f"{'all steps, window':22s} {r['central_rel_err']:8.4f} {r['stable_rel_err']:8.4f} "
            f"{r['mid_rel_err']:8.4f}",
            f"{'from onset, window':22s} {e['central_rel_err']:8.4f} {e['stable_rel_err']:8.4f} "
            f"{e['mid_rel_err']:8.4f}",
            f"{'anchor Gaussian':22s} {g['central_rel_err']:8.4f} {g['stable_rel_err']:8.4f} "
            f"{g['mid_rel_err']:8.4f}",
            f"onsets: central {o['central_active']} / stable λ1>2/η {o['stable_lam_above']} / "
            f"GD λ1>2/η {o['gd_lam_above']} / GD first catapult {o['gd_first_catapult']}",
        ]
    )


def main(argv=None) -> int:
    common.setup()
    import numpy as np

    from dynloss_jax import results
    from dynloss_jax.config import ConfigError

    p = common.parser(__doc__, OUT)
    add_flags(p)
    args = p.parse_args(argv)
    s = common.settings(args, FULL, QUICK, SMOKE)
    out = Path(args.out)
    if args.replot:
        loaded = np.load(out / ARRAYS)
        arrays = {k: loaded[k] for k in loaded.files}
        summary = results.read_json(out / common.SUMMARY)
        s = dict(summary["settings"])
    else:
        if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
            print(
                f"central_flow_anchor: error: {out} exists and is not empty: pass --overwrite, "
                "or --resume to continue it",
                file=sys.stderr,
            )
            return 2
        checkpoint = central_flow.checkpoint_of(args, out, "anchor", s)
        if args.overwrite:
            checkpoint[0].unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        started, load_before, at_start = common.run_start()
        try:
            arrays = run_flows_anchor(s, args.quiet, checkpoint)
        except ConfigError as e:
            print(f"central_flow_anchor: error: {e}", file=sys.stderr)
            return 2
        summary = summarise(arrays, s)
        summary["anchor"] = ANCHOR
        summary["published"] = PUBLISHED
        summary["settings"] = dict(s)
        out.mkdir(parents=True, exist_ok=True)
        results.atomic_write_npz(out / ARRAYS, arrays)
        results.write_json(out / common.SUMMARY, summary)
        results.write_json(out / common.RUN_INFO, common.run_info(started, load_before, at_start))
        checkpoint[0].unlink()
    plot(arrays, summary, s, out / PNG)
    print(table(summary))
    print(f"wrote {out / PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
