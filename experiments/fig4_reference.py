"""Fig. 4's reference clock: where gradient flow's sharpness crosses 2/η, for the runs with λ1
at every step of a stored Fig. 4 table.

Gradient flow dw/dt = −∇L(w, t) is what GD approaches as η → 0. Started from the same network
under the same Γ(t), it gives each run a clock that no loss-based rule and no oscillation of GD
touches (GD's own λ1 runs ahead of it or behind it at a finite η; that lag is measured here):
the first GD step k (t = η·k) at which the flow's λ1 exceeds 2/η. For every run with λ1 at every
step in ``--table`` (a ``runs.csv`` of ``experiments.fig4_instability``: kind ``dense``) this
integrates the flow (:func:`dynloss_jax.flows.stable_flow`: RK4 with dt·λ1 ≤ 1, ``--substeps``
at least per step; λ1 by warm-started subspace iteration, its residual recorded as the error
bound), vmapped over the runs of each (loss, η), in pieces of ``--piece`` steps until every run
of the group has crossed or reached its step cap. It writes, in ``--out``:

* ``reference.csv``: one row per run — its (loss, η, A, T, seed), the flow's crossing step
  (empty: none within the cap) and λ1 and residual there, and from the table GD's crossing and
  each rule's onset step and GD's λ1 there;
* ``summary.json``: per loss and η, how many runs' flows crossed, GD − flow crossing, and per
  rule the median, range and count of onset − flow and onset − GD crossing and the mean
  η·λ1/2 of GD at its onsets; per (A, T) condition the steps of the declared rule;
* ``run_info.json`` and ``fig4_reference.png`` (each rule's onset and GD's crossing against the
  flow's crossing).

Several tables (``--table A B``: e.g. the stored runs and more seeds) are read as one; the
flows of runs already run by an earlier call (``--reuse DIR``, with the same flow settings)
are taken from its ``reference.csv`` instead of being run again.

The network, data and Γ of a run are rebuilt from the table's stored sweep settings
(``sweeps/dense_*.json`` beside it, or the run folders' ``config.json``); the test checks the
flow's λ1 at step 0 against GD's own initial λ1 from the engine.

    python -m experiments.fig4_reference --table FIG4_FOLDER [FIG4_FOLDER ...] [--reuse DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from experiments import common

PNG = "fig4_reference.png"


def read_rows(table: Path) -> list[dict]:
    from experiments import fig4_instability as fig4

    return [r for r in fig4.read_table(table / "runs.csv") if r["kind"] == "dense"]


def stored_settings(table: Path) -> dict[str, dict]:
    """The stored sweep settings of the dense runs, by loss."""
    found = sorted((table / "sweeps").glob("dense_*.json")) or sorted(
        table.glob("dense_*/config.json")
    )
    if not found:
        raise SystemExit(f"fig4_reference: error: {table}: no dense_* sweep settings stored")
    out = {}
    for path in found:
        settings = json.loads(path.read_text())["settings"]
        for loss in settings["loss"]:
            out[loss] = settings
    return out


def group_problem(settings: dict, loss: str, eta: float, rows: list[dict]):
    """``(loss_fn(w, t, h), W0_RxN, hyper)`` of the runs ``rows`` (one loss and η): the sweep's
    own network, data and Γ, Γ read at real step t/η; ``h`` one run's hyperparameters."""
    import dataclasses

    import jax

    from dynloss_jax import SweepConfig, engine, objective
    from dynloss_jax.spec import make_hyper

    config = dataclasses.replace(
        SweepConfig.from_settings(settings), loss=(loss,), eta=(eta,), seeds=1
    )
    program = next(p for p in config.programs() if p["loss"] == loss)
    spec = config.spec(program)
    hyper = make_hyper(
        eta=[eta] * len(rows),
        amplitude=[r["amplitude"] for r in rows],
        period=[r["period"] for r in rows],
        seed=[r["seed"] for r in rows],
        dtype=config.dtype,
    )
    data = config.arrays()

    def loss_fn(w, t, h):
        g = objective.gamma_at(spec, t / eta, h)
        return objective.loss_of_w(spec, h, w, g, data.x_train, data.y_train)[0]

    W0 = jax.jit(jax.vmap(lambda h: engine.init_state(spec, h).w_N))(hyper)
    return loss_fn, W0, hyper


def run_group(settings, loss, eta, rows, args, progress=print) -> list[dict]:
    """The flow of every run of ``rows`` to its crossing or its cap; one dict per run."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dynloss_jax import flows

    loss_fn, W0, hyper = group_problem(settings, loss, eta, rows)
    n, N = len(rows), W0.shape[1]
    U0 = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (N, args.k)))[0].astype(W0.dtype)
    cap = np.array([r["step_cap"] for r in rows])
    piece = args.piece

    @jax.jit
    def advance(state, first):
        def one(w, U, h):
            return flows.stable_flow(
                lambda w_, t: loss_fn(w_, t, h),
                w,
                U,
                eta=eta,
                n_steps=piece,
                substeps=args.substeps,
                eig_iterations=args.eig_iterations,
                state=(w, U),
                first_step=first,
            )

        return jax.vmap(one)(*state, hyper)

    state = (W0, jnp.broadcast_to(U0, (n, N, args.k)))
    cross = np.full(n, -1)
    lam_at = np.full(n, np.nan)
    res_at = np.full(n, np.nan)
    lam0 = None
    done = 0
    while done < cap.max():
        state, rec = advance(state, done)
        lam = np.asarray(rec.lam[..., 0])  # runs × steps
        res = np.asarray(rec.residual[..., 0])
        if lam0 is None:
            lam0 = lam[:, 0].copy()
        for i in range(n):
            if cross[i] < 0:
                above = np.flatnonzero(lam[i] > 2.0 / eta)
                if above.size and done + above[0] < cap[i]:
                    cross[i] = done + above[0]
                    lam_at[i], res_at[i] = lam[i, above[0]], res[i, above[0]]
        done += piece
        progress(f"{loss} η={eta:g}: {done} steps, {int((cross >= 0).sum())}/{n} crossed")
        if np.all((cross >= 0) | (cap <= done)):
            break
    return [
        {
            "loss": r["loss"],
            "eta": eta,
            "amplitude": r["amplitude"],
            "period": r["period"],
            "seed": r["seed"],
            "step_cap": int(cap[i]),
            "flow_steps": int(min(done, cap[i])),
            "flow_lam1_step0": float(lam0[i]),
            "flow_cross_step": int(cross[i]) if cross[i] >= 0 else None,
            "flow_crossed": int(cross[i] >= 0),
            "flow_lam1_at_cross": None if cross[i] < 0 else float(lam_at[i]),
            "flow_residual_at_cross": None if cross[i] < 0 else float(res_at[i]),
        }
        for i, r in enumerate(rows)
    ]


def joined(rows: list[dict], flow: list[dict]) -> list[dict]:
    """The flow's rows with, from the table, GD's crossing and every rule's onset step (−1:
    none); the differences are formed in :func:`summarise`."""
    from experiments import fig4_instability as fig4

    key = ("loss", "eta", "amplitude", "period", "seed")
    gd = {tuple(r[k] for k in key): r for r in rows}
    out = []
    for f in flow:
        r = gd[tuple(f[k] for k in key)]
        row = dict(f, gd_cross_step=r["cross_step"], gd_crossed=r["crossed"])
        for rule in fig4.table_rules(rows):
            onset, lam1, _ = fig4.rule_columns(rule)
            row[onset], row[lam1] = r[onset], r[lam1]
        out.append(row)
    return out


def _minus(a, b):
    """a − b for two steps, None if either is missing (None, or −1 for an onset)."""
    if a is None or b is None or a < 0:
        return None
    return a - b


def _stats(x) -> dict:
    import numpy as np

    x = np.array([v for v in x if v is not None], float)
    if not x.size:
        return {"n": 0}
    return {
        "n": int(x.size),
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
        "before": int((x < 0).sum()),
    }


def _mean_sem(x) -> dict:
    import numpy as np

    x = np.array(list(x), float)
    if not x.size:
        return {"n": 0}
    sem = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else None
    return {"n": int(x.size), "mean": float(x.mean()), "sem": sem}


def read_reference(path: Path) -> list[dict]:
    """The flow's columns of a stored ``reference.csv``, typed as :func:`run_group` returns
    them."""
    ints = {"period", "seed", "step_cap", "flow_steps", "flow_crossed", "flow_cross_step"}
    out = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for c in FLOW_COLUMNS:
                v = raw[c]
                row[c] = v if c == "loss" else (int(v) if c in ints else float(v)) if v else None
            out.append(row)
    return out


# the columns of run_group's rows, in order
FLOW_COLUMNS = (
    "loss",
    "eta",
    "amplitude",
    "period",
    "seed",
    "step_cap",
    "flow_steps",
    "flow_lam1_step0",
    "flow_cross_step",
    "flow_crossed",
    "flow_lam1_at_cross",
    "flow_residual_at_cross",
)
FLOW_SETTINGS = ("substeps", "eig_iterations", "k")


def summarise(joined_rows: list[dict], declared: str) -> dict:
    """Per loss and η (and per (A, T) condition for the declared rule) the flow's crossings,
    GD − flow, and onset − flow under every rule; ``before`` counts negative differences (the
    onset, or GD's crossing, before the flow's crossing)."""
    rules = [k[len("onset[") : -1] for k in joined_rows[0] if k.startswith("onset[")]
    out: dict = {"declared": declared, "rules": rules, "by_eta": {}, "by_condition": {}}
    groups: dict = {}
    for r in joined_rows:
        groups.setdefault((r["loss"], r["eta"]), []).append(r)
    for (loss, eta), rs in sorted(groups.items()):
        out["by_eta"][f"{loss} eta={eta:g}"] = {
            "runs": len(rs),
            "flow_crossed": sum(r["flow_crossed"] for r in rs),
            "gd_crossed": sum(r["gd_crossed"] or 0 for r in rs),
            "gd_minus_flow": _stats(_minus(r["gd_cross_step"], r["flow_cross_step"]) for r in rs),
            "onset_minus_flow": {
                rule: _stats(_minus(r[f"onset[{rule}]"], r["flow_cross_step"]) for r in rs)
                for rule in rules
            },
            "onset_minus_gd": {
                rule: _stats(_minus(r[f"onset[{rule}]"], r["gd_cross_step"]) for r in rs)
                for rule in rules
            },
            "ratio_at_onset": {  # η·λ1/2 of GD at each rule's onset, over the runs it fired in
                rule: _mean_sem(
                    eta * r[f"lam1[{rule}]"] / 2 for r in rs if r[f"onset[{rule}]"] >= 0
                )
                for rule in rules
            },
            "max_residual_at_cross": max(
                (r["flow_residual_at_cross"] for r in rs if r["flow_crossed"]), default=None
            ),
        }
        for r in rs:
            cond = f"{loss} eta={eta:g} A={r['amplitude']:g} T={r['period']}"
            out["by_condition"].setdefault(cond, []).append(
                {
                    "seed": r["seed"],
                    "flow_cross_step": r["flow_cross_step"],
                    "gd_cross_step": r["gd_cross_step"],
                    "onset": r[f"onset[{declared}]"],
                }
            )
    return out


def plot(joined_rows: list[dict], summary: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    losses = sorted({r["loss"] for r in joined_rows})
    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 4.2), squeeze=False)
    for ax, loss in zip(axes[0], losses, strict=True):
        rs = [r for r in joined_rows if r["loss"] == loss and r["flow_crossed"]]
        x = np.array([r["flow_cross_step"] * r["eta"] for r in rs], float)
        for rule, marker in ((summary["declared"], "o"), ("first_difference", "^")):
            col = f"onset[{rule}]"
            if col not in (rs[0] if rs else {}):
                continue
            d = [_minus(r[col], r["flow_cross_step"]) for r in rs]
            y = np.array(
                [np.nan if v is None else v * r["eta"] for v, r in zip(d, rs, strict=True)]
            )
            ax.scatter(x, y, marker=marker, s=18, label=f"{rule} onset")
        d = [_minus(r["gd_cross_step"], r["flow_cross_step"]) for r in rs]
        y = np.array([np.nan if v is None else v * r["eta"] for v, r in zip(d, rs, strict=True)])
        ax.scatter(x, y, marker="x", s=22, color="k", label="GD's λ1 > 2/η")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_yscale("symlog", linthresh=50)
        ax.set_xlabel("gradient flow's crossing of 2/η (time η·k)")
        ax.set_ylabel("minus the flow's crossing (time η·k)")
        ax.set_title(loss.upper())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    common.setup()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--table", nargs="+", required=True, help="Fig. 4 folders with runs.csv (dense rows)"
    )
    p.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        help="earlier outputs of this command: the flows of the runs they hold are taken from "
        "their reference.csv (run with the same flow settings), not run again",
    )
    p.add_argument("--out", default="results/fig4_reference")
    p.add_argument("--losses", nargs="*", help="only these losses")
    p.add_argument("--etas", type=float, nargs="*", help="only these η")
    p.add_argument("--substeps", type=int, default=2, help="RK4 steps per GD step, at least")
    p.add_argument("--eig-iterations", type=int, default=3)
    p.add_argument("--k", type=int, default=2, help="eigenvectors carried (λ1 reported)")
    p.add_argument("--piece", type=int, default=500, help="steps per compiled piece")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    started, load_before, at_start = common.run_start()
    key = ("loss", "eta", "amplitude", "period", "seed")
    reused: dict = {}
    for folder in map(Path, args.reuse):
        info = json.loads((folder / common.RUN_INFO).read_text())
        if any(info[name] != getattr(args, name) for name in FLOW_SETTINGS):
            print(
                f"fig4_reference: error: {folder}: its flows ran with other settings "
                f"({', '.join(f'{n}={info[n]}' for n in FLOW_SETTINGS)})",
                file=sys.stderr,
            )
            return 2
        reused.update(
            {tuple(f[k] for k in key): f for f in read_reference(folder / "reference.csv")}
        )
    rows, groups = [], {}
    for table in map(Path, args.table):
        settings = stored_settings(table)
        for r in read_rows(table):
            if (args.losses and r["loss"] not in args.losses) or (
                args.etas and r["eta"] not in args.etas
            ):
                continue
            rows.append(r)
            if tuple(r[k] for k in key) not in reused:
                groups.setdefault((str(table), r["loss"], r["eta"]), (settings, []))[1].append(r)
    if not rows:
        print("fig4_reference: error: no dense runs selected", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    progress = (lambda _: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    flow, timings = [], {}
    for (table, loss, eta), (settings, rs) in groups.items():
        t0 = time.perf_counter()
        flow += run_group(settings[loss], loss, eta, rs, args, progress)
        timings[f"{table}: {loss} eta={eta:g}"] = round(time.perf_counter() - t0, 1)
    done = {tuple(f[k] for k in key): f for f in flow}
    flow = [done.get(tuple(r[k] for k in key)) or reused[tuple(r[k] for k in key)] for r in rows]
    from dynloss_jax import results
    from experiments import fig4_instability as fig4

    declared = fig4.table_rules(rows)[0]
    j = joined(rows, flow)
    summary = summarise(j, declared)
    fig4.write_table(j, out / "reference.csv")
    results.write_json(out / common.SUMMARY, summary)
    info = common.run_info(started, load_before, at_start)
    info.update(
        tables=args.table,
        reused=args.reuse,
        **{name: getattr(args, name) for name in FLOW_SETTINGS},
        piece=args.piece,
        group_seconds=timings,
    )
    results.write_json(out / common.RUN_INFO, info)
    plot(j, summary, out / PNG)
    for name, g in summary["by_eta"].items():
        d = g["onset_minus_flow"][declared]
        print(
            f"{name}: flow crossed {g['flow_crossed']}/{g['runs']}, GD − flow median "
            f"{g['gd_minus_flow'].get('median')}, {declared} onset − flow median "
            f"{d.get('median')} (range {d.get('min')} … {d.get('max')})"
        )
    print(f"wrote {out / 'reference.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
