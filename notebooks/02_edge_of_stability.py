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
# # Edge of stability and bifurcation cascades
#
# Gradient descent with learning rate η on a loss whose Hessian has largest eigenvalue λ1 is
# stable along the top eigenvector only while λ1 < 2/η. This notebook shows
#
# 1. λ1 and λ2 against step for cross-entropy at two learning rates: the curvature rises until it
#    meets the edge of stability 2/η (Fig. 1 of the paper);
# 2. a bifurcation cascade in a dynamical cross-entropy (DCE) run, zoomed in: when λ1 crosses
#    2/η the loss splits into two alternating branches (a period-2 oscillation), and when λ2
#    crosses too the orbit doubles again (Fig. 2);
# 3. the loss on the 2-D plane spanned by the top two Hessian eigenvectors, with the next
#    gradient-descent steps bouncing between the walls of the valley.
#
# Set `SMOKE=1` in the environment for a short version with the same cells (what the test suite
# runs; it still shows the first bifurcation).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import dynloss_jax
from dynloss_jax import SweepConfig, engine, gamma, get_loss, landscape, run_sweep, spiral
from dynloss_jax.data import make_data
from dynloss_jax.spec import RunSpec, make_hyper

SMOKE = os.environ.get("SMOKE") == "1"  # a short version of every cell
dynloss_jax.use_cpu_cores()  # every CPU core as a JAX device (before JAX's first computation)
jax.config.update("jax_enable_x64", True)


def crossings(steps, values, level):
    """Steps where a series rises above ``level`` after being at or below it."""
    above = np.asarray(values) > level
    return [int(steps[i]) for i in range(1, len(above)) if above[i] and not above[i - 1]]


# %% [markdown]
# ## 1. λ1, λ2 against 2/η for two learning rates
#
# Cross-entropy, width 50, full-batch gradient descent at η = 0.5 and η = 1 in one compiled
# program. λ1 ≥ λ2 are the two largest eigenvalues of the Hessian of the loss, from a
# 16-step Lanczos on Hessian-vector products every 25 steps (warm-started from the previous
# measurement). Dashed: 2/η.

# %%
config = SweepConfig(
    loss=("ce",),
    width=(50,),
    eta=(0.5, 1.0),
    amplitude=(1.0,),
    period=(1,),
    seeds=1,
    steps=500 if SMOKE else 10_000,
    record_every=25,
    eig_every=25,
)
eos = run_sweep(config)

fig, (ax_loss, ax_lam) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, constrained_layout=True)
for eta, color in zip(eos.coords["eta"], ("C0", "C3"), strict=True):
    r = eos.sel(eta=eta)
    lam = r["lam"].reshape(-1, 2)
    ax_loss.semilogy(r["record_step"], r["loss"].ravel(), color=color, label=f"η = {eta:g}")
    ax_lam.plot(r["eig_step"], lam[:, 0], color=color, label=f"λ1, η = {eta:g}")
    ax_lam.plot(r["eig_step"], lam[:, 1], color=color, lw=0.8, alpha=0.6, label="λ2")
    ax_lam.axhline(2 / eta, color=color, ls="--", lw=1)
    first = crossings(r["eig_step"], lam[:, 0], 2 / eta)
    if first:
        after = lam[r["eig_step"] >= first[0], 0]
        print(
            f"η = {eta:g}: λ1 first above 2/η = {2 / eta:g} at t = {first[0]}; after that λ1 "
            f"ranges over {after.min():.2f} … {after.max():.2f}, median {np.median(after):.2f}"
        )
    else:
        print(f"η = {eta:g}: λ1 stays below 2/η = {2 / eta:g} (max {lam[:, 0].max():.2f})")
ax_loss.set_ylabel("CE loss")
ax_loss.legend()
ax_lam.set_ylabel("λ1, λ2 (dashed: 2/η)")
ax_lam.set_xlabel("step t")
ax_lam.legend(ncol=2, fontsize=8)
plt.show()

# %% [markdown]
# ## 2. A bifurcation cascade, zoomed in
#
# The run of Fig. 2: DCE, width 100, A = 70, η = 1; the loss recorded at every step, λ1, λ2
# every 5 steps. In the smoke version the period is shortened to T = 2000 so that the first
# bifurcation comes within 2000 steps; the full version runs the paper's T = 5000 for two
# periods. In the second half of a period the emphasised class's weight falls back, the valley
# narrows and λ1 grows; the plots zoom on the last period from shortly before λ1 reaches 2/η.
#
# λ is sampled every 5 steps, an odd number: on a period-2 orbit successive samples alternate
# between the two points of the orbit, so the λ curves zigzag between the curvature at both.
# (The smoke version samples every 10 steps, always on the same point of the orbit.)

# %%
T = 2000 if SMOKE else 5000
config = SweepConfig(
    loss=("dce",),
    width=(100,),
    eta=(1.0,),
    amplitude=(70.0,),
    period=(T,),
    seeds=1,
    steps=T if SMOKE else 2 * T,
    record_every=1,
    eig_every=10 if SMOKE else 5,
)
run = run_sweep(config)
eta = run.coords["eta"][0]
loss = run["loss"].ravel()
lam = run["lam"].reshape(-1, 2)
steps, eig_steps = run["record_step"], run["eig_step"]
print(
    f"first period-2 onset detected from F: t = {run['instability_step'].item()}, "
    f"λ1 there = {run['instability_lam'].item():.3f} (2/η = {2 / eta:g})"
)
for k in range(2):
    print(f"λ{k + 1} rises above 2/η at t = {crossings(eig_steps, lam[:, k], 2 / eta)[:4]}")

# %%
half = config.steps - T // 2  # the second half of the last period
late = eig_steps >= half
cross1 = crossings(eig_steps[late], lam[late, 0], 2 / eta)
cross2 = crossings(eig_steps[late], lam[late, 1], 2 / eta)
lo = max(half, cross1[0] - T // 10) if cross1 else half  # zoom: from shortly before λ1 > 2/η
zoom, zoom_eig = steps >= lo, eig_steps >= lo

fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True, constrained_layout=True)
axes[0].plot(steps[zoom], loss[zoom], ".", ms=1.5)
axes[0].set_ylabel("F(t)")
diff = np.diff(loss, prepend=np.nan)
axes[1].plot(steps[zoom], diff[zoom], ".", ms=1.5, color="C1")
axes[1].set_yscale("symlog", linthresh=1e-5)
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set_ylabel("F(t) − F(t−1)")
axes[2].plot(eig_steps[zoom_eig], lam[zoom_eig, 0], lw=0.8, color="C3", label="λ1")
axes[2].plot(eig_steps[zoom_eig], lam[zoom_eig, 1], lw=0.8, color="C4", label="λ2")
axes[2].axhline(2 / eta, color="k", ls="--", lw=1, label="2/η")
axes[2].set_ylabel("λ1, λ2")
axes[2].legend(fontsize=8, loc="upper left")
axes[3].plot(steps[zoom], run["train_acc"].ravel()[zoom], lw=0.6, color="C2")
axes[3].set_ylabel("train accuracy")
axes[3].set_xlabel("step t")
for ax in axes:
    for t in cross1[:1]:
        ax.axvline(t, color="C3", ls=":", lw=1)
    for t in cross2[:1]:
        ax.axvline(t, color="C4", ls=":", lw=1)
axes[0].set_title("dotted: λ1 (red) and λ2 (purple) first above 2/η in this window", fontsize=9)
plt.show()

# %% [markdown]
# ## 3. The landscape on the plane of the top two Hessian eigenvectors
#
# `run_sweep` keeps time series, not parameters, so the run is replayed with the engine's
# single-run step (`engine.advance_one`) up to a few times t, and at each one
# `landscape.hessian_top_vectors` gives v1, v2 of the Hessian of F_t at x_t,
# `landscape.plane_slice` evaluates F_t(x_t + a·v1 + b·v2), and `landscape.project` places the
# next 20 steps x_{t+1..t+20} on the plane. Gradient descent amplifies round-off on a period-2
# orbit, so after the bifurcation the replay agrees with the recorded run only to a few percent
# in F; the printout compares them.

# %%
s = run.config["settings"]
spec = RunSpec(loss="dce", width=100, n_steps=config.steps, record_every=1)
hyper = jax.tree.map(lambda a: a[0], make_hyper(eta=[eta], amplitude=[70.0], period=[T], seed=[0]))
x, y = spiral(s["points_per_class"], seed=s["train_seed"])
xv, yv = spiral(s["points_per_class"], seed=s["val_seed"])
data = make_data(x, y, xv, yv)
model, dce = spec.model, get_loss("dce")
NEXT = 20
EXTENT = 1.0  # a, b ∈ [−EXTENT, EXTENT], as in the paper
a_G = jnp.linspace(-EXTENT, EXTENT, 21 if SMOKE else 61)


def one_step(state):
    return engine.advance_one(spec, 1, state, hyper, data)[0]


@jax.jit
def run_to(state, target):
    return jax.lax.fori_loop(state.step, target, lambda _, st: one_step(st), state)


@jax.jit
def window(state):
    """x_t, x_{t+1}, …, x_{t+NEXT} from ``state`` at t."""

    def body(st, _):
        return one_step(st), st.w_N

    return jax.lax.scan(body, state, None, length=NEXT + 1)[1]


@jax.jit
def slice_at(key, w_LxN, t):
    g = gamma(t, n_classes=3, amplitude=hyper.amplitude, period=hyper.period)

    def f(w_N):
        return dce(model.apply(w_N, data.x_train), data.y_train, g)

    top = landscape.hessian_top_vectors(key, f, w_LxN[0], k=2, num_matvecs=32)
    v1, v2 = top.vectors_KxN
    grid = landscape.plane_slice(f, w_LxN[0], v1, v2, a_G, a_G)
    return top.top_K, grid, landscape.project(w_LxN, w_LxN[0], v1, v2), f(w_LxN[0])


first_cross = (cross1 or [lo + T // 4])[0]
later = (cross2 or [first_cross + (config.steps - first_cross) // 2])[0]
snapshots = sorted({first_cross - T // 10, first_cross + 25, later + 25})
snapshots = [t for t in snapshots if t + NEXT < config.steps]

state = engine.init_state(spec, hyper)
fig, axes = plt.subplots(
    1, len(snapshots), figsize=(4.2 * len(snapshots), 4), constrained_layout=True
)
for ax, t in zip(np.atleast_1d(axes), snapshots, strict=True):
    state = run_to(state, t)
    w_LxN = window(state)
    lam_t, grid, (pa, pb), f_t = slice_at(jax.random.key(t), w_LxN, t)
    print(
        f"t = {t}: λ1 = {lam_t[0]:.3f}, λ2 = {lam_t[1]:.3f}; replayed F = {f_t:.5f}, "
        f"recorded {loss[t]:.5f}; next steps within |a| ≤ {np.abs(pa).max():.3f}, "
        f"|b| ≤ {np.abs(pb).max():.3f}"
    )
    mesh = ax.contourf(a_G, a_G, np.log10(np.asarray(grid)).T, levels=30, cmap="viridis")
    fig.colorbar(mesh, ax=ax, fraction=0.046, label="log10 F_t")
    ax.plot(pa, pb, "-o", color="lime", ms=3, lw=0.6, mec="darkgreen")
    ax.plot(0, 0, "x", color="red", ms=9, mew=2)
    ax.set_title(f"t = {t}: λ1 = {lam_t[0]:.2f}, λ2 = {lam_t[1]:.2f}", fontsize=10)
    ax.set_xlabel("a (along v1)")
    ax.set_ylabel("b (along v2)")
    ax.set_aspect("equal")
plt.show()
