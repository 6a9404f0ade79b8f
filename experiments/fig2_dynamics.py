"""Fig. 2: one run of dynamical cross-entropy, and the landscape it bounces in.

Left, against step t: (a) the class weights Γ_i(t); (b) the loss being minimised F(t) (DCE at Γ(t));
(c) F(t) − F(t−1), where a period-2 oscillation shows as alternating signs; (d) train accuracy;
(e) the two largest Hessian eigenvalues λ1 ≥ λ2 of F_t with the edge-of-stability line 2/η.
Right: F_t on the plane x_t + a·v1 + b·v2 (a, b ∈ [−1, 1]) spanned by the top-2 Hessian
eigenvectors at x_t, for t = 8000, 9285, 9450, 9560, 9600, with x_t (red cross) and the next 20
GD steps x_{t+1..t+20} projected onto the plane (green). The plane is drawn for F_t, the loss of
step t; the following steps minimise F_{t+1}, F_{t+2}, …, whose weights Γ_i move by at most
1 % (t = 8000) to 4 % (t = 9600) over those 20 steps.

Settings (the paper's): width 100, T = 5000, A = 70, η = 1, 10 000 steps, seed 0 (decided: the
paper does not say which), loss recorded at every step, λ1, λ2 every 5 steps (16-step Lanczos,
warm-started), slices on an 81 × 81 grid (eigenvectors from a 32-step Lanczos at x_t). ``--quick``
keeps the same dynamics — the whole run is cheap, and shorter periods (T = 500, 1000) show no or
hardly any bifurcation before the run ends — and only coarsens the measurements: λ every 25 steps
(as the authors' notebook), a 41 × 41 grid. Changing ``--period`` without ``--snapshots`` scales
the snapshot times by T/5000.

How the snapshots are made: the time series come from :func:`dynloss_jax.run_sweep` (the results
folder), which does not keep parameters. x_t … x_{t+20} are obtained by replaying the run with the
engine's compiled program for the run's own device layout, which reproduces the recorded trajectory
bit for bit — this matters, because in the period-2 regime gradient descent amplifies round-off
(a replay compiled differently, e.g. without vmap, drifts from the recorded F by ~1e-5 at t = 8000
and a few % by t = 9600). The replayed F over each window is stored and compared with the recorded
F (printed; 0 difference expected). The snapshots (x_t … x_{t+20}, v1, v2, λ1, λ2, the slices
and the projected coordinates) are written to ``snapshots.npz`` (checksum in ``snapshots.json``),
so ``--replot`` draws without any computation.

What the full run shows (seed 0): λ1 first exceeds 2/η in the second half of the first period
at t = 4020 and of the second at t = 9090; F then oscillates with period 2 (sustained from
t = 4045 and t = 9119). λ2 exceeds 2/η at t = 9350, and from t ≈ 9600 the oscillation has
period 4 (|F(t) − F(t−2)| grows from ~1e-3 to ~3e-2 while |F(t) − F(t−4)| stays ~3e-3): the
period-doubling cascade of the paper. In the slices the trajectory bounces along v1 at t = 9285
and 9450, and also along v2 at t = 9560 and 9600. λ1 alternates between two branches in the
period-2 regime (dots in panel e), so λ1 at a single step depends on the phase.

Runtime (2 CPU cores, float64, heavily shared machine — noisy): full ≈ 40 s CPU time
(~1.5 min wall under load: the run ~45 s, the replay and slices ~40 s); ``--quick`` ≈ 25 s CPU
time. On a GPU this one sequential run is latency-bound and not expected to be faster (not
measured).

    python -m experiments.fig2_dynamics                 # -> results/fig2_dynamics/
    python -m experiments.fig2_dynamics --quick
    python -m experiments.fig2_dynamics --replot        # redraw from the folder
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from experiments import common

PAPER_SNAPSHOTS = (8000, 9285, 9450, 9560, 9600)
PAPER_PERIOD = 5000
FULL = dict(
    width=100,
    amplitude=70.0,
    period=5000,
    eta=1.0,
    steps=10_000,
    seed=0,
    eig_every=5,
    next_steps=20,
    grid=81,
    extent=1.0,
    slice_matvecs=32,
)
QUICK = dict(FULL, eig_every=25, grid=41)
SMOKE = dict(
    FULL, width=16, period=100, steps=200, eig_every=10, grid=9, next_steps=10, slice_matvecs=16
)
REPLAY_JUMP = 100  # steps per call while replaying up to a snapshot
SNAPSHOTS = "snapshots"  # snapshots.npz, with its checksum in snapshots.json
PNG = "fig2_dynamics.png"


OUT = "results/fig2_dynamics"
LABEL = "fig2"


def add_flags(p):
    p.add_argument("--width", type=int, help="hidden units (default 100)")
    p.add_argument("--amplitude", type=float, help="A (default 70)")
    p.add_argument("--period", type=int, help="T in steps (default 5000)")
    p.add_argument("--eta", type=float, help="learning rate (default 1)")
    p.add_argument("--steps", type=int, help="GD steps (default 10000)")
    p.add_argument("--seed", type=int, help="network seed (default 0)")
    p.add_argument("--eig-every", type=int, help="λ1, λ2 every k steps (default 5; quick 25)")
    p.add_argument(
        "--snapshots",
        type=int,
        nargs="+",
        help="slice times t (default 8000 9285 9450 9560 9600, scaled by T/5000)",
    )
    p.add_argument("--next-steps", type=int, help="trajectory steps drawn after t (default 20)")
    p.add_argument("--grid", type=int, help="slice points per axis (default 81; quick 41)")
    p.add_argument("--extent", type=float, help="slice half-width in a and b (default 1)")


def settings_from(args) -> dict:
    """The preset (full, quick or smoke) overridden by the flags given."""
    preset = common.settings(args, FULL, QUICK, SMOKE)
    if args.snapshots:
        preset["snapshots"] = sorted(args.snapshots)
    else:
        scale = preset["period"] / PAPER_PERIOD
        preset["snapshots"] = sorted({round(t * scale) for t in PAPER_SNAPSHOTS})
    return preset


def configs(s: dict) -> dict:
    from dynloss_jax import SweepConfig

    return {
        "": SweepConfig(
            loss=("dce",),
            width=(s["width"],),
            eta=(s["eta"],),
            amplitude=(s["amplitude"],),
            period=(s["period"],),
            seeds=1,
            first_seed=s["seed"],
            steps=s["steps"],
            record_every=1,
            eig_every=s["eig_every"],
            num_matvecs=16,
        )
    }


def after_runs(runs: dict, s: dict, args) -> None:
    """Replays the run to the snapshot times and saves the landscape there."""
    run = runs[""]
    started = time.perf_counter()
    save_snapshots(run.path, compute_snapshots(run, s), s)
    if not args.quiet:
        print(f"fig2 snapshots: {time.perf_counter() - started:.1f} s", file=sys.stderr)


def compute_snapshots(run, s: dict) -> dict:
    """Replays ``run`` up to each snapshot time and measures the landscape there.

    The replay uses the engine's compiled program for the run's own layout (the strategy
    recorded in the run, the run repeated once per device as :func:`run_sweep` pads it), so it
    reproduces the recorded trajectory bit for bit; ``replay_loss_SxL`` lets that be checked
    against the recorded F(t). ``s`` are the figure settings. Returns arrays (leading axis
    S = snapshots): ``step_S``, ``w_SxLxN`` (x_t … x_{t+L−1}, L = next_steps + 1),
    ``replay_loss_SxL`` (F_{t+i}(x_{t+i})), ``lam_Sx2``, ``residual_Sx2``, ``v_Sx2xN``, ``a_G``,
    ``b_G`` (grid), ``slice_SxGxG`` (F_t on the plane), ``proj_a_SxL``, ``proj_b_SxL``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dynloss_jax import SweepConfig, engine, landscape
    from dynloss_jax.losses import get_loss
    from dynloss_jax.schedule import gamma
    from dynloss_jax.spec import RunSpec, make_hyper
    from dynloss_jax.strategy import Strategy

    config = SweepConfig.from_settings(run.config["settings"])
    # the same program without λ tracking and recording every step: the trajectory is the same
    spec = dataclasses.replace(
        RunSpec.from_config(config, **config.programs()[0]), record_every=1, eig_every=0
    )
    dtype = config.dtype
    strategy = Strategy(**run.config["strategy"])
    hyper = strategy.pad_runs(make_hyper(**config.runs(), dtype=dtype))
    data = config.arrays()
    model, loss_fn = spec.model, get_loss(spec.loss)
    init, step, _ = engine.compiled(spec, 1, strategy)
    # A second program that jumps REPLAY_JUMP steps, compiled only for long replays.
    jump = (
        engine.compiled(spec, REPLAY_JUMP, strategy)[1]
        if s["snapshots"][-1] >= 10 * REPLAY_JUMP
        else None
    )

    def advance(state, t, target):
        while t < target:
            big = jump is not None and target - t >= REPLAY_JUMP
            state = (jump if big else step)(state, hyper, data)[0]
            t += REPLAY_JUMP if big else 1
        return state

    def window(state):
        w, loss = [], []
        for _ in range(s["next_steps"] + 1):
            w.append(np.asarray(state.w_N[0]))
            state, records, *_ = step(state, hyper, data)
            loss.append(float(records.loss[0, 0]))
        return np.stack(w), np.asarray(loss)

    a_G = jnp.linspace(-s["extent"], s["extent"], s["grid"], dtype=dtype)

    @jax.jit
    def measure(key, w_LxN, gamma_C):
        def f(w_N):
            return loss_fn(model.apply(w_N, data.x_train), data.y_train, gamma_C)

        w_t = w_LxN[0]
        top = landscape.hessian_top_vectors(key, f, w_t, k=2, num_matvecs=s["slice_matvecs"])
        v1, v2 = top.vectors_KxN
        grid = landscape.plane_slice(f, w_t, v1, v2, a_G, a_G)
        pa, pb = landscape.project(w_LxN, w_t, v1, v2)
        return top.top_K, top.residual_K, top.vectors_KxN, grid, pa, pb

    state, t = init(hyper, data), 0
    root = jax.random.key(config.first_seed)
    out = {k: [] for k in ("w", "replay_loss", "lam", "residual", "v", "slice", "pa", "pb")}
    for target in s["snapshots"]:
        state, t = advance(state, t, target), target
        w_LxN, loss_L = window(state)
        g = gamma(
            target, n_classes=spec.n_classes, amplitude=config.amplitude[0], period=config.period[0]
        )
        lam, res, v, grid, pa, pb = measure(jax.random.fold_in(root, target), w_LxN, g)
        for k, val in zip(out, (w_LxN, loss_L, lam, res, v, grid, pa, pb), strict=True):
            out[k].append(np.asarray(val))
    stacked = {k: np.stack(v) for k, v in out.items()}
    return {
        "step_S": np.asarray(s["snapshots"]),
        "w_SxLxN": stacked["w"],
        "replay_loss_SxL": stacked["replay_loss"],
        "lam_Sx2": stacked["lam"],
        "residual_Sx2": stacked["residual"],
        "v_Sx2xN": stacked["v"],
        "a_G": np.asarray(a_G),
        "b_G": np.asarray(a_G),
        "slice_SxGxG": stacked["slice"],
        "proj_a_SxL": stacked["pa"],
        "proj_b_SxL": stacked["pb"],
    }


def save_snapshots(out: Path, snaps: dict, s: dict) -> None:
    from dynloss_jax import results

    results.save_extra(out, SNAPSHOTS, snaps, {"settings": s})


def load_snapshots(out: Path) -> tuple[dict, dict]:
    from dynloss_jax import results

    snaps, meta = results.load_extra(out, SNAPSHOTS)
    return snaps, meta["settings"]


def first_above(steps_E, lam_E, level, period) -> list[int]:
    """For each period [kT, (k+1)T): the first measured step of its second half (τ ≥ T/2, where
    the valley narrows) with λ > ``level``; −1 if none."""
    import numpy as np

    steps_E, lam_E = np.asarray(steps_E), np.asarray(lam_E)
    out = []
    for k in range(int(np.ceil((steps_E[-1] + 1) / period))):
        second_half = (steps_E // period == k) & (2 * (steps_E % period) >= period)
        hit = np.nonzero(second_half & (lam_E > level))[0]
        out.append(int(steps_E[hit[0]]) if hit.size else -1)
    return out


def summarise(runs: dict) -> dict:
    """The numbers the figure is about: λ crossings of 2/η per period, the detected instability,
    and per snapshot λ1, λ2, F and how exactly the replay met the recorded loss."""
    import numpy as np

    run = runs[""]
    snaps, _ = load_snapshots(run.path)
    eta, period = run.coords["eta"][0], run.coords["period"][0]
    steps, lam = run["eig_step"], np.squeeze(run["lam"], axis=tuple(range(6)))
    loss = np.squeeze(run["loss"], axis=tuple(range(6)))
    train_acc = np.squeeze(run["train_acc"], axis=tuple(range(6)))
    record_step = np.asarray(run["record_step"])
    rows = []
    for i, t in enumerate(snaps["step_S"]):
        window = t + np.arange(snaps["replay_loss_SxL"].shape[1])
        seen = window < len(loss)
        replay, recorded = snaps["replay_loss_SxL"][i][seen], loss[window[seen]]
        rows.append(
            {
                "step": int(t),
                "lam1": float(snaps["lam_Sx2"][i, 0]),
                "lam2": float(snaps["lam_Sx2"][i, 1]),
                "loss": float(replay[0]),
                "replay_max_rel_diff": float(np.max(np.abs(replay - recorded) / np.abs(recorded))),
                "max_abs_a": float(np.abs(snaps["proj_a_SxL"][i]).max()),
                "max_abs_b": float(np.abs(snaps["proj_b_SxL"][i]).max()),
                # training accuracy at the last record at or before the snapshot
                "train_acc": float(train_acc[np.searchsorted(record_step, t, "right") - 1]),
            }
        )
    return {
        "two_over_eta": 2 / eta,
        "period": int(period),
        "lam1_first_above": first_above(steps, lam[:, 0], 2 / eta, period),
        "lam2_first_above": first_above(steps, lam[:, 1], 2 / eta, period),
        "instability_step": int(np.squeeze(run["instability_step"])),
        "instability_lam": float(np.squeeze(run["instability_lam"])),
        "snapshots": rows,
        "train_acc_final": float(train_acc[-1]),
    }


def table(runs: dict, summary: dict) -> str:
    lines = [
        f"edge of stability 2/η = {summary['two_over_eta']:g}; second half of each period "
        f"T = {summary['period']} (−1: never)",
        f"  λ1 first above 2/η at t = {summary['lam1_first_above']}",
        f"  λ2 first above 2/η at t = {summary['lam2_first_above']}",
        f"first period-2 onset (from F): t = {summary['instability_step']}"
        f", λ1 there = {summary['instability_lam']:.3f}",
    ]
    for r in summary["snapshots"]:
        lines.append(
            f"t = {r['step']}: λ1, λ2 = {r['lam1']:.3f}, {r['lam2']:.3f}; F_t(x_t) = "
            f"{r['loss']:.5g}; replay vs recorded F over the window: max rel. diff "
            f"{r['replay_max_rel_diff']:.1e}; next steps span |a| ≤ {r['max_abs_a']:.3f}, "
            f"|b| ≤ {r['max_abs_b']:.3f}; training accuracy {r['train_acc']:.3f}"
        )
    lines.append(f"training accuracy at the end: {summary['train_acc_final']:.3f}")
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path):
    """Draws the figure from the loaded run and its snapshots; returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    run = runs[""]
    snaps, _ = load_snapshots(run.path)
    eta = run.coords["eta"][0]
    first = (0,) * 6
    steps = run["record_step"]
    gamma = run["gamma"][first]
    loss = run["loss"][first]
    acc = run["train_acc"][first]
    lam = run["lam"][first]
    eig_steps = run["eig_step"]
    n_snap = len(snaps["step_S"])

    fig = plt.figure(figsize=(11.5, 11.5), constrained_layout=True)
    outer = fig.add_gridspec(1, 2, width_ratios=[2.4, 1])
    left = outer[0].subgridspec(5, 1)
    right = outer[1].subgridspec(n_snap, 1)
    axes = [fig.add_subplot(left[0])]
    axes += [fig.add_subplot(left[i], sharex=axes[0]) for i in range(1, 5)]

    for i in range(gamma.shape[-1]):
        axes[0].plot(steps, gamma[:, i], lw=1.2, label=f"Γ{i + 1}")
    axes[0].legend(loc="upper right", fontsize=8, ncol=gamma.shape[-1])
    axes[0].set_ylabel("(a) Γ_i(t)")
    axes[1].semilogy(steps, loss, lw=0.4, color="C0")
    axes[1].set_ylabel("(b) F(t)")
    diff = np.diff(loss)
    axes[2].plot(steps[1:], diff, lw=0.4, color="C1")
    axes[2].set_yscale("symlog", linthresh=1e-4)
    axes[2].axhline(0, color="k", lw=0.5)
    axes[2].set_ylabel("(c) F(t) − F(t−1)")
    axes[3].plot(steps, acc, lw=0.4, color="C2")
    axes[3].set_ylabel("(d) train accuracy")
    axes[4].plot(eig_steps, lam[:, 0], ".", ms=1.5, color="C3", label="λ1")
    axes[4].plot(eig_steps, lam[:, 1], ".", ms=1.5, color="C4", label="λ2")
    axes[4].axhline(2 / eta, color="k", ls="--", lw=1, label=f"2/η = {2 / eta:g}")
    axes[4].set_ylabel("(e) λ1, λ2")
    axes[4].legend(loc="upper left", fontsize=8, markerscale=5)
    axes[4].set_xlabel("step t")
    for ax in axes:
        for t in snaps["step_S"]:
            ax.axvline(t, color="0.6", lw=0.6, ls=":")
    axes[0].set_title(
        f"DCE, width {run.coords['width'][0]}, A = {run.coords['amplitude'][0]:g}, "
        f"T = {run.coords['period'][0]}, η = {eta:g}, seed {run.coords['seed'][0]} "
        "(dotted: snapshot times)",
        fontsize=10,
    )

    a, b = snaps["a_G"], snaps["b_G"]
    for i in range(n_snap):
        ax = fig.add_subplot(right[i])
        grid = snaps["slice_SxGxG"][i]
        positive = grid[grid > 0]
        norm = LogNorm(positive.min(), positive.max()) if positive.size else None
        mesh = ax.pcolormesh(a, b, grid.T, shading="auto", cmap="viridis", norm=norm)
        bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02)
        if norm is not None:
            bar.set_ticks(
                np.geomspace(norm.vmin, norm.vmax, 4),
                labels=[f"{v:.2g}" for v in np.geomspace(norm.vmin, norm.vmax, 4)],
            )
            bar.ax.minorticks_off()
        bar.ax.tick_params(labelsize=7)
        pa, pb = snaps["proj_a_SxL"][i], snaps["proj_b_SxL"][i]
        ax.quiver(
            pa[:-1],
            pb[:-1],
            np.diff(pa),
            np.diff(pb),
            angles="xy",
            scale_units="xy",
            scale=1,
            color="lime",
            alpha=0.45,
            width=0.006,
            headwidth=3,
        )
        ax.plot(pa[1:], pb[1:], "o", ms=3, color="lime", mec="darkgreen", mew=0.5)
        ax.plot(0, 0, "x", color="red", ms=8, mew=2)
        ax.set_xlim(a[0], a[-1])
        ax.set_ylim(b[0], b[-1])
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.set_title(
            f"t = {snaps['step_S'][i]}: λ1 = {snaps['lam_Sx2'][i, 0]:.2f}, "
            f"λ2 = {snaps['lam_Sx2'][i, 1]:.2f}",
            fontsize=8,
        )
        ax.set_ylabel("b (along v2)", fontsize=8)
        if i == n_snap - 1:
            ax.set_xlabel("a (along v1)", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
