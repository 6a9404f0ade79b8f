# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The whole Hessian spectrum during a dynamical-loss run
#
# λ1 alone says whether gradient descent is stable; the rest of the spectrum says how the
# curvature is shared. This notebook follows one DCE run on the spiral (C = 3 classes) and shows,
# all measured inside the compiled run,
#
# 1. the spectral density of the Hessian (stochastic Lanczos quadrature, SLQ) over a DCE period,
#    as a heatmap and as density curves at a few steps;
# 2. the trace tr H (Hutch++) with its standard error;
# 3. λ1 of each weight and bias block against 2/η, with the full λ1;
# 4. a check against the dense Hessian at a few steps: how many eigenvalues stand apart from the
#    bulk (for C classes the literature expects about C − 1), and whether SLQ sees the same.
#
# Set `SMOKE=1` in the environment for a short version with the same cells (what the test suite
# runs; a tiny network, so its numbers mean little).

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import dynloss_jax
from dynloss_jax import (
    SweepConfig,
    density_on_grid,
    engine,
    gamma,
    get_loss,
    run_sweep,
    spectral_density,
    tracking,
)
from dynloss_jax.plotting import density_image
from dynloss_jax.spec import RunSpec, make_hyper
from dynloss_jax.strategy import default_strategy

SMOKE = os.environ.get("SMOKE") == "1"  # a short version of every cell
dynloss_jax.use_cpu_cores()  # every CPU core as a JAX device (before JAX's first computation)
jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## The run
#
# DCE, η = 1, A = 70, three periods of T steps: class 0 is emphasised in the first period,
# class 1 in the second, and the last period is static (Γ ≡ 1, plain cross-entropy). Width 100
# (N = 603 parameters; 8 in the smoke version). Every 25 steps the engine measures λ1, λ2 and the
# λ1 of each block (`layer_sharpness`); every 100 steps the spectral density (`density_every`:
# 8 Rademacher probes × 32 Lanczos steps) and the trace (`trace_every`: Hutch++ with 60
# Hessian-vector products). Every quantity is of the Hessian of the loss F_t that step t
# minimises, at the parameters w_t.

# %%
T = 100 if SMOKE else 5000
WIDTH = 8 if SMOKE else 100
ETA, AMPLITUDE = 1.0, 70.0
config = SweepConfig(
    loss=("dce",),
    width=(WIDTH,),
    eta=(ETA,),
    amplitude=(AMPLITUDE,),
    period=(T,),
    seeds=1,
    steps=3 * T,
    static_last_period=True,
    record_every=5 if SMOKE else 25,
    eig_every=10 if SMOKE else 25,
    layer_sharpness=True,
    density_every=10 if SMOKE else 100,
    density_matvecs=32,
    density_probes=8,
    trace_every=10 if SMOKE else 100,
    trace_samples=60,
    chunk_steps=T // 10,  # the replay below stops at chunk boundaries
)
started = time.perf_counter()
run = run_sweep(config)
print(f"run_sweep: {time.perf_counter() - started:.1f} s (compile {run.config['compile_s']} s)")

blocks = run.config["blocks"]
eig_steps, density_steps, trace_steps = run["eig_step"], run["density_step"], run["trace_step"]
lam = run["lam"].reshape(-1, 2)
layer_lam = run["layer_lam"].reshape(len(eig_steps), len(blocks))
nodes_DxSxM = run["density_nodes"].reshape(len(density_steps), config.density_probes, -1)
weights_DxSxM = run["density_weights"].reshape(nodes_DxSxM.shape)
trace, trace_se = run["trace"].ravel(), run["trace_se"].ravel()
gamma_RxC = run["gamma"].reshape(len(run["record_step"]), -1)
print("blocks:", blocks, "| onset of the first period-2 orbit: t =", run["instability_step"].item())


def period_lines(ax):
    for k in (1, 2):
        ax.axvline(k * T, color="0.6", lw=0.8, zorder=0)


# %% [markdown]
# ## 1. The spectral density over the run
#
# Each column is one SLQ measurement: the Gauss rules of the 8 probes, each node θ_k with weight
# τ_k, broadened by a Gaussian (`plotting.density_image`, σ = 1/100 of the range) and drawn on a
# log scale, so that outliers (weight ≈ 1/N each) show next to the bulk. Dotted: the recorded
# λ1; dashed: 2/η; grey: period boundaries (the last period is static).

# %%
grid_G, rho_GxD = density_image(nodes_DxSxM, weights_DxSxM, n_grid=300)
fig, (ax_g, ax_rho) = plt.subplots(
    2, 1, figsize=(10, 7), sharex=True, height_ratios=(1, 3), constrained_layout=True
)
for i in range(gamma_RxC.shape[1]):
    ax_g.plot(run["record_step"], gamma_RxC[:, i], lw=1, label=f"Γ{i}")
ax_g.set_ylabel("Γ_i(t)")
ax_g.legend(fontsize=8, ncol=3)
dt = density_steps[1] - density_steps[0]
mesh = ax_rho.imshow(
    np.log10(rho_GxD + 1e-6 * np.nanmax(rho_GxD)),
    origin="lower",
    aspect="auto",
    extent=(density_steps[0], density_steps[-1] + dt, grid_G[0], grid_G[-1]),
    cmap="magma",
    interpolation="nearest",
)
fig.colorbar(mesh, ax=ax_rho, label="log10 density")
ax_rho.plot(eig_steps, lam[:, 0], ":", color="cyan", lw=0.5, alpha=0.7, label="λ1 (Lanczos)")
ax_rho.axhline(2 / ETA, color="w", ls="--", lw=0.8, label="2/η")
ax_rho.set_ylim(grid_G[0], grid_G[-1])
ax_rho.set_ylabel("eigenvalue")
ax_rho.set_xlabel("step t")
ax_rho.legend(fontsize=8, loc="upper left")
for ax in (ax_g, ax_rho):
    period_lines(ax)
plt.show()

# %% [markdown]
# Density curves through the second DCE period (class 1 emphasised) and near the end of the
# static period. Left: the whole range, log scale — the bulk near 0 and the few eigenvalues far
# above it. Right: the bulk, linear scale, with a narrower σ.

# %%
curve_steps = [T, 13 * T // 10, 3 * T // 2, 17 * T // 10, 19 * T // 10, 29 * T // 10]
span = grid_G[-1] - grid_G[0]
wide_G = np.linspace(grid_G[0], grid_G[-1], 800)
bulk_G = np.linspace(-0.05 * span, 0.05 * span, 400)
fig, (ax_wide, ax_bulk) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
top = 0.0
for t in curve_steps:
    d = int(np.searchsorted(density_steps, t))
    nodes, weights = nodes_DxSxM[d], weights_DxSxM[d]
    label = f"t = {density_steps[d]}"
    rho_wide = np.asarray(density_on_grid(nodes, weights, wide_G, span / 200))
    ax_wide.semilogy(wide_G, rho_wide, lw=1, label=label)
    top = max(top, 3 * rho_wide.max())
    ax_bulk.plot(bulk_G, density_on_grid(nodes, weights, bulk_G, span / 1000), lw=1, label=label)
ax_wide.set_ylim(1e-4, top)
ax_wide.axvline(2 / ETA, color="k", ls="--", lw=0.8)
ax_wide.set_xlabel("eigenvalue (dashed: 2/η)")
ax_wide.set_ylabel("density (SLQ, 8 probes)")
ax_wide.legend(fontsize=8)
ax_bulk.set_xlabel("eigenvalue (bulk)")
plt.show()

# %% [markdown]
# ## 2. The trace
#
# tr H = Σ_i λ_i from Hutch++ (60 products: 20 to sketch the top of the spectrum, 20 for its exact
# trace, 20 Hutchinson probes on the rest), with the standard error of those probes as a band.

# %%
fig, ax = plt.subplots(figsize=(10, 3.5), constrained_layout=True)
ax.plot(trace_steps, trace, lw=1, label="tr H (Hutch++)")
ax.fill_between(trace_steps, trace - trace_se, trace + trace_se, alpha=0.3, lw=0)
ax.plot(eig_steps, lam[:, 0], lw=0.8, color="C3", label="λ1")
ax.set_xlabel("step t")
ax.set_ylabel("tr H, λ1")
ax.legend(fontsize=8)
period_lines(ax)
plt.show()
print(f"median relative standard error of the trace: {np.median(trace_se / np.abs(trace)):.2%}")

# %% [markdown]
# ## 3. λ1 per block against 2/η
#
# λ1(H_bb) of each diagonal block (one per weight or bias array of the network), from 16 Lanczos
# steps on the masked operator, and λ1 of the whole Hessian. By interlacing every block's λ1 is at
# most the full λ1.

# %%
fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
ax.plot(eig_steps, lam[:, 0], color="k", lw=1.2, label="λ1, full H")
for b, name in enumerate(blocks):
    ax.plot(eig_steps, layer_lam[:, b], lw=0.9, label=name)
ax.axhline(2 / ETA, color="k", ls="--", lw=0.8, label="2/η")
ax.set_xlabel("step t")
ax.set_ylabel("λ1")
ax.legend(fontsize=8, ncol=3)
period_lines(ax)
plt.show()
for b, name in enumerate(blocks):
    above = np.mean(layer_lam[:, b] > 2 / ETA)
    print(
        f"{name:>15}: max λ1 = {np.nanmax(layer_lam[:, b]):.3f}, share of the full λ1 "
        f"(median) {np.nanmedian(layer_lam[:, b] / lam[:, 0]):.2f}, above 2/η {above:.0%} of steps"
    )
above = np.mean(lam[:, 0] > 2 / ETA)
print(f"{'full H':>15}: max λ1 = {np.nanmax(lam[:, 0]):.3f}, above 2/η {above:.0%} of steps")

# %% [markdown]
# ## 4. Outliers: the dense Hessian against SLQ
#
# `run_sweep` keeps time series, not parameters. The run is replayed with the same compiled
# program (`engine.compiled` with the same settings, chunk length and device layout, so no new
# compilation) and its parameters taken at the end of chunks: at t = T (Γ ≡ 1 for a moment,
# after one DCE period), 1.5 T (the peak of Γ1), 1.9 T (late in the period, where λ1 is largest)
# and 2.9 T (near the end of the static cross-entropy period). The printout checks that the replay
# is the recorded run bit for bit.

# %%
checks = [T, 3 * T // 2, 19 * T // 10, 29 * T // 10]
group = config.programs()[0]
spec = RunSpec.from_config(config, **group)
strategy = default_strategy()  # what run_sweep used
hyper = strategy.pad_runs(
    make_hyper(**config.program_runs(group), opt_hp=config.opt_hp, dtype=config.dtype)
)
data = config.arrays()
init, advance, _ = engine.compiled(spec, config.chunk, strategy)
state, w_at, replayed = init(hyper, data), {}, []
for _ in range(config.steps // config.chunk):
    if int(state.step[0]) in checks:
        w_at[int(state.step[0])] = np.asarray(state.w_N[0])
    state, records, _, _ = advance(state, hyper, data)
    replayed.append(np.asarray(records.loss[0]))
mismatch = np.nanmax(np.abs(np.concatenate(replayed) - run["loss"].ravel()))
print(f"replay vs recorded loss: max |difference| = {mismatch:.1e}")

# %% [markdown]
# At each of those steps: the dense Hessian of the flat-parameter loss F_t (`jax.hessian`, N × N)
# and its eigenvalues (`numpy.linalg.eigvalsh`), λ_1 ≥ λ_2 ≥ … ≥ λ_N.
#
# **Outlier rule.** Among the top K = 10 eigenvalues, the gap ratios g_k = λ_k / λ_{k+1}; the
# number of outliers is the k with the largest g_k, provided g_k ≥ 2 (else 0: no clear gap). The
# edge of that largest gap is √(λ_k λ_{k+1}), its geometric middle. All ten ratios are printed, to
# show when the top of the spectrum is layered or smooth rather than split by one clean gap.
#
# **What SLQ sees.** Each outlier carries weight (q_iᵀu)² ≈ 1/N in a probe's Gauss rule, so
# N × (weight above the edge of the largest gap) counts the eigenvalues above it (mean over
# probes; its noise is about √(2k/S) for k eigenvalues and S probes), whether or not the gap
# passes the rule. It is computed for the 8 probes recorded in the run and for 64 fresh
# probes at the same parameters (`spectral_density`); also the number of Ritz values above the
# edge per probe (median), and the top Ritz value against λ1.

# %%
model, dce = spec.model, get_loss("dce")
x_train, y_train = data.x_train, data.y_train
N = model.n_params
names, masks_LxN = tracking.layer_blocks(spec)
K, MIN_RATIO, FRESH_PROBES = 10, 2.0, 64


def loss_at(w_N, gamma_C):
    return dce(model.apply(w_N, x_train), y_train, gamma_C)


dense_hessian = jax.jit(jax.hessian(loss_at))
fresh_density = jax.jit(
    lambda w_N, g, key: spectral_density(
        lambda w: loss_at(w, g), w_N, key=key, num_matvecs=32, num_probes=FRESH_PROBES
    )
)


def largest_gap(lam_desc):
    """(k, edge, ratios): the largest gap ratio λ_k/λ_{k+1} among the top K and its edge."""
    top = lam_desc[: K + 1]
    ratios = np.where(top[1:] > 0, top[:-1] / np.where(top[1:] > 0, top[1:], 1.0), np.inf)
    k = int(np.argmax(ratios)) + 1
    return k, float(np.sqrt(top[k - 1] * max(top[k], 0.0))), ratios


def slq_view(nodes, weights, edge):
    above = nodes > edge
    mass = N * np.mean(np.sum(weights * above, axis=-1))
    ritz = np.median(np.sum(above & (weights > 0), axis=-1))
    return mass, ritz, float(np.mean(nodes[:, -1]))


findings, checked = [], []
for t in checks:
    g = gamma(t, n_classes=3, amplitude=AMPLITUDE, period=T, static_after=config.steps - T)
    H_NxN = np.asarray(dense_hessian(jnp.asarray(w_at[t]), g))
    lam_dense = np.linalg.eigvalsh(H_NxN)[::-1]
    k_gap, edge, ratios = largest_gap(lam_dense)
    k = k_gap if ratios[k_gap - 1] >= MIN_RATIO else 0
    d, e, tr = (int(np.searchsorted(s, t)) for s in (density_steps, eig_steps, trace_steps))
    recorded = slq_view(nodes_DxSxM[d], weights_DxSxM[d], edge)
    rho = fresh_density(jnp.asarray(w_at[t]), g, jax.random.key(t))
    fresh = slq_view(np.asarray(rho.nodes), np.asarray(rho.weights), edge)
    block_lam = [np.linalg.eigvalsh(H_NxN[np.ix_(m > 0, m > 0)])[-1] for m in masks_LxN]
    findings.append(dict(t=t, lam=lam_dense, k=k, k_gap=k_gap, edge=edge))
    record = dict(
        step=t,
        gamma=np.asarray(g).tolist(),
        dense_top=lam_dense[:12].tolist(),
        dense_lam_min=float(lam_dense[-1]),
        gap_ratios=ratios[:K].tolist(),
        outliers=k,
        largest_gap_after=k_gap,
        slq_count_run=float(recorded[0]),
        slq_count_fresh=float(fresh[0]),
        lam1_run=float(lam[e, 0]),
        top_slq_node=recorded[2],
        trace_dense=float(lam_dense.sum()),
        trace_run=float(trace[tr]),
        trace_se_run=float(trace_se[tr]),
        block_lam_dense=dict(zip(names, map(float, block_lam), strict=True)),
        block_lam_run=dict(zip(names, map(float, layer_lam[e]), strict=True)),
    )
    checked.append(record)
    print(f"t = {t}, Γ = {np.round(np.asarray(g), 3)}")
    print(f"  dense top 12: {np.round(lam_dense[:12], 4)}; λ_min = {lam_dense[-1]:.4f}")
    print(f"  gap ratios g1..g10: {np.round(ratios[:K], 2)}")
    print(
        f"  outliers (rule above): {k}; largest gap g{k_gap} = {ratios[k_gap - 1]:.2f}, "
        f"edge {edge:.4f}, {k_gap} eigenvalue(s) above it"
    )
    print(
        f"  SLQ, N × weight above that edge: {recorded[0]:.2f} (run, 8 probes), "
        f"{fresh[0]:.2f} ({FRESH_PROBES} fresh probes); Ritz values above it per probe "
        f"(median): {recorded[1]:.0f}, {fresh[1]:.0f}"
    )
    print(
        f"  λ1: dense {lam_dense[0]:.6f}, Lanczos in the run {lam[e, 0]:.6f}, top SLQ node "
        f"(mean over probes) {recorded[2]:.6f}"
    )
    print(
        f"  trace: dense {lam_dense.sum():.4f}, Hutch++ in the run {trace[tr]:.4f} ± "
        f"{trace_se[tr]:.4f} ({(trace[tr] - lam_dense.sum()) / trace_se[tr]:+.1f} s.e.)"
    )
    cells = ", ".join(
        f"{n} {bl:.4f} (run {layer_lam[e, b]:.4f})"
        for b, (n, bl) in enumerate(zip(names, block_lam, strict=True))
    )
    print(f"  block λ1, dense: {cells}; 2/η = {2 / ETA:g}")

# %% [markdown]
# The dense spectra: the top 20 eigenvalues on a log scale (filled: counted as outliers; the
# line: the edge of the largest gap, dashed when it passes the rule, dotted when not), and the
# eigenvalue histogram against the SLQ density recorded at the same step.

# %%
fig, axes = plt.subplots(2, len(findings), figsize=(4 * len(findings), 7), constrained_layout=True)
for col, f in enumerate(findings):
    top = f["lam"][:20]
    ax = axes[0, col]
    ax.semilogy(np.arange(1, len(top) + 1), np.where(top > 0, top, np.nan), "o", mfc="none")
    ax.semilogy(np.arange(1, f["k"] + 1), top[: f["k"]], "o", color="C3")
    ax.axhline(f["edge"], color="k", ls="--" if f["k"] else ":", lw=0.8)
    ax.set_title(f"t = {f['t']}: {f['k']} outlier(s)", fontsize=10)
    ax.set_xlabel("rank i")
    ax = axes[1, col]
    bins = np.linspace(f["lam"].min(), f["lam"].max(), 120)
    heights, _ = np.histogram(f["lam"], bins=bins, density=True)
    ax.stairs(heights, bins, fill=True, color="0.7", label="dense")
    d = int(np.searchsorted(density_steps, f["t"]))
    width = bins[1] - bins[0]
    rho_slq = np.asarray(density_on_grid(nodes_DxSxM[d], weights_DxSxM[d], bins, width))
    ax.semilogy(bins, rho_slq, label="SLQ")
    ax.set_xlabel("eigenvalue")
    ax.set_ylim(0.3 / (N * width), 3 * max(heights.max(), rho_slq.max()))
axes[0, 0].set_ylabel("λ_i (dense)")
axes[1, 0].set_ylabel("density")
axes[1, 0].legend(fontsize=8)
plt.show()
print("outlier counts:", {f["t"]: f["k"] for f in findings}, f"(C − 1 = {3 - 1})")

# %% [markdown]
# The numbers above, with the settings and the machine, are written to `04_spectrum.json` in the
# working folder (the copy in `docs/results/notebook_04_spectrum/` is the full run the README
# quotes).

# %%
import json  # noqa: E402
import platform  # noqa: E402

summary = dict(
    command="python notebooks/04_spectrum.py" + (" (SMOKE=1)" if SMOKE else ""),
    settings=config.settings(),
    runtime_s=round(time.perf_counter() - started, 1),
    machine=dict(
        processor=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        load_avg=list(os.getloadavg()),
        backend=jax.default_backend(),
        devices=len(jax.devices()),
        jax=jax.__version__,
    ),
    trace_median_relative_se=float(np.nanmedian(trace_se / np.abs(trace))),
    lam1_above_threshold=float(np.mean(lam[:, 0] > 2 / ETA)),
    blocks={
        n: dict(
            max_lam=float(np.nanmax(layer_lam[:, b])),
            median_share=float(np.nanmedian(layer_lam[:, b] / lam[:, 0])),
            above_threshold=float(np.mean(layer_lam[:, b] > 2 / ETA)),
        )
        for b, n in enumerate(blocks)
    },
    checks=checked,
)
with open("04_spectrum.json", "w") as f:
    json.dump(summary, f, indent=1)
print("wrote 04_spectrum.json")
