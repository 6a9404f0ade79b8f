"""Beyond the paper: the central flow of a dynamical loss against gradient descent.

    python -m experiments.central_flow --quick     # ≤ 3 min on 2 CPU cores
    python -m experiments.central_flow             # Fig. 2's settings, one full cycle of Γ

For CE and DCE on the spiral (Fig. 2's network and data) the compiled program of
:func:`dynloss_jax.flows.run_flows` runs, from the same initial network, GD, its second-order
midpoints, the stable flow (gradient flow) and the central flow, whose drive carries Γ(t)'s own
change of the critical block (``docs/central_flow.md``). The settings default to Fig. 2's:
width 100, A = 70, T = 5000, η = 1, and the run covers one full cycle of Γ (C·T steps: every
class emphasised once).

``summary.json`` holds, per loss (``ce``, ``dce``):

* ``central_rel_err``: the median over steps of |ℓ̂_k − ℓ̄_k| / ℓ̄_k, where ℓ̂ is the central
  flow's prediction of GD's time-averaged loss, L(w_c) + ½⟨X, F⟩, and ℓ̄ is GD's loss smoothed
  by a centred moving average of ``window`` steps (100, fixed before any run; the steps within
  half a window of either end are left out). ``stable_rel_err``: the same for the stable flow's
  loss; ``mid_rel_err``: for the loss at GD's midpoints. ``sensitivity`` repeats the three for
  windows of 20 and 500 steps.
* ``onset``: the first step at which the central flow's critical block is active (X ≠ 0 on a
  direction within ``edge_tol`` of 2/η), GD's onset under the calibrated rule
  (:func:`dynloss_jax.instability.first_instability` on GD's loss), and the first step with
  GD's λ1 > 2/η.
* ``tracking``: how far apart the processes are (‖w_GD − w_c‖ and ‖w_stable − w_c‖ at the end
  and their maxima), the projection's largest residual, the stable flow's largest dt·λ1.

``arrays.npz`` keeps every per-step record (the summary is recomputed from it by the tests), and
``central_flow.png`` shows GD, smoothed GD, the stable flow and the central flow over the cycle:
loss above, λ1 against 2/η below.

A run (20 min per loss at the full settings on 2 cores) writes ``checkpoint_<loss>.npz`` beside
them every ``--checkpoint-every`` seconds (default 300): after an interruption, ``--resume``
continues each loss from its checkpoint to the arrays of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from experiments import common

FULL = dict(
    losses=("ce", "dce"),
    width=100,
    amplitude=70.0,
    period=5000,
    cycles=1,
    eta=1.0,
    seed=0,
    k=3,
    substeps=2,
    eig_iterations=3,
    edge_tol=1e-3,
    kappa=0.1,
    window=100,
    piece=500,
)
QUICK = dict(FULL, width=32, amplitude=20.0, period=400, piece=200)
# the smallest case in which both flows and GD meet the edge (η = 2.5: 2/η = 0.8)
SMOKE = dict(FULL, width=16, amplitude=20.0, period=60, eta=2.5, k=2, piece=30, window=10)
OUT = "results/central_flow"
PNG = "central_flow.png"
ARRAYS = "arrays.npz"
WINDOWS = (20, 500)  # the sensitivity of the relative errors to the smoothing window


def add_flags(p):
    p.add_argument("--losses", nargs="+", help="losses (default ce dce)")
    p.add_argument("--width", type=int, help="hidden units (default 100)")
    p.add_argument("--amplitude", type=float, help="A (default 70)")
    p.add_argument("--period", type=int, help="T in steps (default 5000)")
    p.add_argument("--cycles", type=int, help="cycles of Γ, C·T steps each (default 1)")
    p.add_argument("--eta", type=float, help="learning rate (default 1)")
    p.add_argument("--seed", type=int, help="network seed (default 0)")
    p.add_argument("--k", type=int, help="top eigenvalues tracked (default 3)")
    p.add_argument("--substeps", type=int, help="RK4 steps per GD step (default 2)")
    p.add_argument("--window", type=int, help="smoothing window of GD's loss (default 100)")
    p.add_argument(
        "--resummarise",
        action="store_true",
        help="with --replot: recompute summary.json from the stored arrays (no training)",
    )


def n_steps(s: dict, n_classes: int = 3) -> int:
    return s["cycles"] * n_classes * s["period"]


def spiral_problem(s: dict, loss: str):
    """(loss_fn(w, t), w0, U0) of the run: Fig. 2's network and data, Γ at real step t/η."""
    import jax
    import jax.numpy as jnp

    from dynloss_jax import SweepConfig, engine, objective
    from dynloss_jax.spec import RunSpec, make_hyper

    config = SweepConfig(
        loss=(loss,),
        width=(s["width"],),
        eta=(s["eta"],),
        amplitude=(s["amplitude"],),
        period=(s["period"],),
        first_seed=s["seed"],
        seeds=1,
        steps=n_steps(s),
        record_every=1,
    ).validate()
    spec = RunSpec.from_config(config, **config.programs()[0])
    hyper = jax.tree.map(lambda a: a[0], make_hyper(**config.runs(), dtype=config.dtype))
    data = config.arrays()
    eta = s["eta"]

    def loss_fn(w, t):
        g = objective.gamma_at(spec, t / eta, hyper)
        return objective.loss_of_w(spec, hyper, w, g, data.x_train, data.y_train)[0]

    w0 = engine.init_state(spec, hyper).w_N
    U0 = jnp.linalg.qr(jax.random.normal(jax.random.key(s["seed"] + 1), (w0.shape[0], s["k"])))
    return loss_fn, w0, U0[0].astype(w0.dtype), config


def flows_of(loss_fn, U0, s: dict, n_steps: int):
    """``run(w0, state=None, first=0) -> (state, records)``: ``n_steps`` steps of
    :func:`dynloss_jax.flows.run_flows` at the settings ``s`` with the in-graph projection
    solver; pure, for ``jit`` and ``vmap``."""
    from dynloss_jax import central_flow, flows

    def solve(alpha, beta, mask):
        p = central_flow.solve(alpha, beta, mask)
        return p.X, p.residual

    def run(w0, state=None, first=0):
        return flows.run_flows(
            loss_fn,
            w0,
            U0,
            eta=s["eta"],
            n_steps=n_steps,
            substeps=s["substeps"],
            eig_iterations=s["eig_iterations"],
            edge_tol=s["edge_tol"],
            kappa=s["kappa"] / s["eta"],
            solve=solve,
            activation=s.get("activation", "step"),
            eig_every=s.get("eig_every", "step"),
            state=state,
            first_step=first,
        )

    return run


def many_flows(s: dict, loss: str, seeds, n_steps: int):
    """The four processes for every seed of ``seeds`` (initial networks from ``key(seed)``;
    the same data, Γ and U0), vmapped in one compiled program of ``n_steps`` steps: returns
    ``(program, W0_RxN)``, ``program(W0)`` giving the :class:`~dynloss_jax.flows.FlowRecord`
    with a leading run axis. What an accelerator runs by the thousand
    (``benchmarks.gpu_check``, part ``flows``)."""
    import jax

    from dynloss_jax import engine
    from dynloss_jax.spec import RunSpec, make_hyper

    loss_fn, _, U0, config = spiral_problem(s, loss)
    spec = RunSpec.from_config(config, **config.programs()[0])
    n = len(seeds)
    hyper = make_hyper(
        eta=[s["eta"]] * n, amplitude=[s["amplitude"]] * n, period=[s["period"]] * n, seed=seeds
    )
    W0 = jax.jit(jax.vmap(lambda h: engine.init_state(spec, h).w_N))(hyper)
    run = flows_of(loss_fn, U0, s, n_steps)
    return jax.jit(jax.vmap(lambda w0: run(w0)[1])), W0


def flows_program(loss_fn, w0, U0, s: dict, piece: int):
    """``advance(state, first)``: ``piece`` steps of :func:`dynloss_jax.flows.run_flows` at the
    settings ``s``, compiled once, and the initial :class:`~dynloss_jax.flows.FlowState`."""
    import jax

    from dynloss_jax import flows

    run = flows_of(loss_fn, U0, s, piece)
    advance = jax.jit(lambda state, first: run(w0, state, first))
    return advance, flows.FlowState(w0, w0, w0, w0, U0, U0, U0)


def piece_length(total: int, longest: int) -> int:
    """The longest piece of at most ``longest`` steps that divides the run."""
    return max(d for d in range(1, min(longest, total) + 1) if total % d == 0)


def run_pieces(advance, state, total: int, piece: int, *, progress, checkpoint=None):
    """Runs ``advance`` piece by piece to ``total`` steps; returns the records as NumPy arrays
    (leading axis: step). ``progress(done, total)`` is called after each piece.

    ``checkpoint`` = ``(path, settings, every)``: the state, the records so far and the next
    step are written to ``path`` (whole, by rename) when ``every`` seconds have passed since the
    last write (0: after every piece) and at the end; a run started with that file present
    continues from it, if it was written with the same ``settings`` — so an interrupted run
    loses at most ``every`` seconds and finishes with the arrays of an uninterrupted one."""
    import json

    import jax
    import numpy as np

    from dynloss_jax import flows, results
    from dynloss_jax.config import ConfigError

    leaves, treedef = jax.tree.flatten(state)
    first, pieces = 0, []
    path, settings, every = checkpoint if checkpoint is not None else (None, None, 0.0)
    if path is not None and path.exists():
        saved = np.load(path)
        if str(saved["settings"]) != json.dumps(settings, sort_keys=True):
            raise ConfigError("resume", str(path), "was written with other settings")
        first = int(saved["next_step"])
        state = jax.tree.unflatten(treedef, [saved[f"state_{i}"] for i in range(len(leaves))])
        if first:
            pieces.append({k: saved[f"record_{k}"] for k in flows.FlowRecord._fields})

    def save(next_step):
        records = {k: np.concatenate([p[k] for p in pieces]) for k in flows.FlowRecord._fields}
        arrays = {f"record_{k}": v for k, v in records.items()}
        arrays.update({f"state_{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(state))})
        arrays["next_step"] = np.asarray(next_step)
        arrays["settings"] = np.asarray(json.dumps(settings, sort_keys=True))
        results.atomic_write_npz(path, arrays)

    saved_at = time.perf_counter()
    for start in range(first, total, piece):
        state, rec = advance(state, start)
        pieces.append({k: np.asarray(v) for k, v in rec._asdict().items()})
        done = start + piece
        if path is not None and (done == total or time.perf_counter() - saved_at >= every):
            save(done)
            saved_at = time.perf_counter()
        progress(done, total)
    return {k: np.concatenate([p[k] for p in pieces]) for k in flows.FlowRecord._fields}


def printer(label: str, quiet: bool):
    """A ``progress(done, total)`` that prints steps and the rate to stderr (nothing if quiet)."""
    started = time.perf_counter()

    def progress(done, total):
        if not quiet:
            rate = done / max(time.perf_counter() - started, 1e-9)
            line = f"{label}: {done}/{total} steps ({rate:.0f} steps/s)"
            print(line, file=sys.stderr, flush=True)

    return progress


def checkpoint_of(args, out: Path, name: str, s: dict):
    """The ``checkpoint`` argument of :func:`run_pieces` for the run ``name`` of a results folder:
    ``--checkpoint-every`` seconds (default 300)."""
    every = 300.0 if args.checkpoint_every is None else args.checkpoint_every
    return out / f"checkpoint_{name}.npz", dict(s), every


def run_one(s: dict, loss: str, quiet: bool, checkpoint=None) -> dict:
    """Runs the four processes of one loss in compiled pieces; returns the records as NumPy
    arrays (leading axis: step)."""
    loss_fn, w0, U0, _ = spiral_problem(s, loss)
    total = n_steps(s)
    piece = piece_length(total, s["piece"])
    advance, state = flows_program(loss_fn, w0, U0, s, piece)
    label = f"central_flow {loss}"
    return run_pieces(
        advance,
        state,
        total,
        piece,
        progress=printer(label, quiet),
        checkpoint=checkpoint,
    )


def smooth(x_T, window: int):
    """Centred moving average over ``window`` steps; NaN within half a window of either end."""
    import numpy as np

    x = np.asarray(x_T, float)
    out = np.full_like(x, np.nan)
    c = np.concatenate([[0.0], np.cumsum(x)])
    h = window // 2
    idx = np.arange(h, len(x) - (window - h) + 1)
    out[idx] = (c[idx + window - h] - c[idx - h]) / window
    return out


def rel_err(pred_T, ref_T) -> float:
    import numpy as np

    ok = np.isfinite(ref_T) & np.isfinite(pred_T)
    return float(np.median(np.abs(pred_T[ok] - ref_T[ok]) / np.abs(ref_T[ok])))


def summarise_loss(a: dict, s: dict) -> dict:
    """The numbers of one loss from its per-step arrays ``a`` (see the module docstring)."""
    import numpy as np

    from dynloss_jax.instability import first_instability

    eta = s["eta"]

    def errors(window):
        ref = smooth(a["loss_gd"], window)
        return {
            "central_rel_err": rel_err(a["predicted"], ref),
            "stable_rel_err": rel_err(a["loss_stable"], ref),
            "mid_rel_err": rel_err(a["loss_mid"], ref),
        }

    def first(mask):
        idx = np.flatnonzero(mask)
        return int(idx[0]) if idx.size else -1

    active = (a["active"] > 0) & (a["trace_X"] > 0)

    def per_period():
        """The median errors of the central and stable flows over each period of Γ."""
        ref, T, n = smooth(a["loss_gd"], s["window"]), s["period"], len(a["loss_gd"])
        return [
            {
                "steps": [lo, min(lo + T, n)],
                "central_rel_err": rel_err(a["predicted"][lo : lo + T], ref[lo : lo + T]),
                "stable_rel_err": rel_err(a["loss_stable"][lo : lo + T], ref[lo : lo + T]),
            }
            for lo in range(0, n, T)
        ]

    return {
        **errors(s["window"]),
        "window": s["window"],
        # per period of Γ where the loss has one (a static loss, as in the anchor case, has none)
        **({"per_period": per_period()} if "period" in s else {}),
        "sensitivity": {str(w): errors(w) for w in WINDOWS},
        "onset": {
            "central_active": first(active),
            "gd_calibrated": first_instability(np.asarray(a["loss_gd"])),
            "gd_lam_above": first(a["lam_gd"][:, 0] > 2 / eta),
            "stable_lam_above": first(a["lam_stable"][:, 0] > 2 / eta),
        },
        "tracking": {
            "dist_gd_central_end": float(a["dist_gd_central"][-1]),
            "dist_gd_central_max": float(np.max(a["dist_gd_central"])),
            "dist_mid_central_end": float(a["dist_mid_central"][-1]),
            "dist_stable_central_end": float(a["dist_stable_central"][-1]),
            "residual_max": float(np.max(a["residual"])),
            "stability_max": float(np.max(a["stability"])),
            "active_max": int(np.max(a["active"])),
            "lam_central_max_over_edge": float(np.max(a["lam_central"][:, 0]) * eta / 2),
        },
        "final": {
            "loss_gd": float(a["loss_gd"][-1]),
            "loss_stable": float(a["loss_stable"][-1]),
            "predicted": float(a["predicted"][-1]),
        },
    }


def plot(arrays: dict, summary: dict, s: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    losses = list(arrays)
    fig, axes = plt.subplots(2, len(losses), figsize=(6 * len(losses), 7), squeeze=False)
    for j, loss in enumerate(losses):
        a, steps = arrays[loss], np.arange(len(arrays[loss]["loss_gd"]))
        ax = axes[0, j]
        ax.plot(steps, a["loss_gd"], color="0.75", lw=0.5, label="GD")
        ax.plot(
            steps,
            smooth(a["loss_gd"], s["window"]),
            color="k",
            lw=1.2,
            label=f"GD, {s['window']}-step average",
        )
        ax.plot(steps, a["loss_stable"], color="tab:blue", lw=1, label="stable flow")
        ax.plot(
            steps,
            a["predicted"],
            color="tab:red",
            lw=1.2,
            ls="--",
            label="central flow (predicted average)",
        )
        ax.set_yscale("log")
        r = summary[loss]
        ax.set_title(
            f"{loss.upper()}: median rel. error central {r['central_rel_err']:.3f}, "
            f"stable {r['stable_rel_err']:.3f}",
            fontsize=9,
        )
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
        ax = axes[1, j]
        ax.plot(steps, a["lam_gd"][:, 0], color="0.6", lw=0.5, label="GD λ1")
        ax.plot(steps, a["lam_stable"][:, 0], color="tab:blue", lw=1, label="stable flow λ1")
        ax.plot(
            steps, a["lam_central"][:, 0], color="tab:red", lw=1.2, ls="--", label="central flow λ1"
        )
        ax.axhline(2 / s["eta"], color="k", lw=0.8, ls=":", label="2/η")
        for c in range(1, 3 * s["cycles"]):
            ax.axvline(c * s["period"], color="0.85", lw=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("top Hessian eigenvalue")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"width {s['width']}, A = {s['amplitude']:g}, T = {s['period']}, η = {s['eta']:g}: "
        "GD, its average, the stable flow and the central flow over one cycle of Γ",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(summary: dict) -> str:
    lines = [
        f"{'loss':5s} {'central':>8s} {'stable':>8s} {'midpts':>8s}  onsets: central / "
        "GD calibrated / GD λ1>2/η"
    ]
    for loss, r in summary.items():
        o = r["onset"]
        lines.append(
            f"{loss:5s} {r['central_rel_err']:8.4f} {r['stable_rel_err']:8.4f} "
            f"{r['mid_rel_err']:8.4f}  {o['central_active']} / {o['gd_calibrated']} / "
            f"{o['gd_lam_above']}"
        )
    return "\n".join(lines)


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
        arrays = {
            loss: {k[len(loss) + 2 :]: loaded[k] for k in loaded.files if k.startswith(loss + "__")}
            for loss in s["losses"]
        }
        summary = results.read_json(out / common.SUMMARY)
        if args.resummarise:  # the stored run's own settings, numbers recomputed from its arrays
            s = {**s, **summary["settings"]}
            summary = {loss: summarise_loss(arrays[loss], s) for loss in s["losses"]}
            summary["settings"] = s
            results.write_json(out / common.SUMMARY, summary)
    else:
        if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
            print(
                f"central_flow: error: {out} exists and is not empty: pass --overwrite, or "
                "--resume to continue it",
                file=sys.stderr,
            )
            return 2
        if args.overwrite:
            for old in out.glob("checkpoint_*.npz"):
                old.unlink()
        out.mkdir(parents=True, exist_ok=True)
        started, load_before, at_start = common.run_start()
        try:
            arrays = {
                loss: run_one(s, loss, args.quiet, checkpoint_of(args, out, loss, s))
                for loss in s["losses"]
            }
        except ConfigError as e:
            print(f"central_flow: error: {e}", file=sys.stderr)
            return 2
        summary = {loss: summarise_loss(arrays[loss], s) for loss in s["losses"]}
        summary["settings"] = dict(s)
        out.mkdir(parents=True, exist_ok=True)
        results.atomic_write_npz(
            out / ARRAYS,
            {f"{loss}__{k}": v for loss, a in arrays.items() for k, v in a.items()},
        )
        results.write_json(out / common.SUMMARY, summary)
        results.write_json(out / common.RUN_INFO, common.run_info(started, load_before, at_start))
        for loss in s["losses"]:  # the arrays are written: the checkpoints are done with
            checkpoint_of(args, out, loss, s)[0].unlink(missing_ok=True)
    per_loss = {k: v for k, v in summary.items() if k != "settings"}
    plot(arrays, per_loss, s, out / PNG)
    print(table(per_loss))
    print(f"wrote {out / PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
