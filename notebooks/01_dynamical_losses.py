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
# # Dynamical loss functions
#
# A dynamical loss weights each class i by a factor Γ_i(t) that oscillates during training
# (Lavin & Ruiz-García 2024). This notebook shows
#
# 1. the weights Γ_i(t) for several amplitudes A and periods T;
# 2. the five losses of the paper — CE, DCE, MSE, DMSE1, DMSE2 — evaluated on one fixed network
#    as Γ varies;
# 3. one CE and one DCE training run side by side: loss, accuracy and Γ.
#
# Set `SMOKE=1` in the environment for a seconds-long version with the same cells (what the test
# suite runs).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import dynloss_jax
from dynloss_jax import LOSSES, SweepConfig, flat_model, gamma, run_sweep, spiral

SMOKE = os.environ.get("SMOKE") == "1"  # a seconds-long version of every cell
dynloss_jax.use_cpu_cores()  # every CPU core as a JAX device (before JAX's first computation)
jax.config.update("jax_enable_x64", True)

C = 3  # classes

# %% [markdown]
# ## 1. The weights Γ_i(t)
#
# In period k = ⌊t/T⌋ class c = k mod C is emphasised. With τ = t mod T, its raw weight rises
# linearly from 1 to A at τ = T/2 and falls back to 1; the others keep raw weight 1; then all are
# rescaled so that Σ_i Γ_i = C. At every period start Γ ≡ 1 (the static loss), and at the peak
# Γ_c = C·A/(A+C−1).

# %%
steps = np.arange(3 * 1000)
fig, axes = plt.subplots(2, 3, figsize=(12, 5), sharex=True, constrained_layout=True)
for row, period in enumerate([1000, 500]):
    for col, amplitude in enumerate([2.0, 10.0, 70.0]):
        gamma_TxC = jax.vmap(
            lambda t, A=amplitude, T=period: gamma(t, n_classes=C, amplitude=A, period=T)
        )(steps)
        ax = axes[row, col]
        for i in range(C):
            ax.plot(steps, gamma_TxC[:, i], label=f"Γ{i}")
        ax.set_title(f"A = {amplitude:g}, T = {period}", fontsize=10)
        assert np.allclose(gamma_TxC.sum(axis=1), C)  # Σ_i Γ_i = C at every step
        peak = C * amplitude / (amplitude + C - 1)
        assert np.isclose(gamma_TxC[period // 2, 0], peak)
axes[0, 0].legend()
for ax in axes[1]:
    ax.set_xlabel("step t")
for ax in axes[:, 0]:
    ax.set_ylabel("Γ_i(t)")
plt.show()

# %% [markdown]
# ## 2. The five losses on one network as Γ varies
#
# With P samples, logits f_j and one-hot labels y_j (class y_j):
#
# * CE = (1/P) Σ_j −log softmax(f_j)_{y_j},  DCE = (1/P) Σ_j Γ_{y_j} · (−log softmax(f_j)_{y_j})
# * MSE = (1/P) Σ_j Σ_i (f_ij − y_ij)²,  DMSE1 = (1/P) Σ_j Γ_{y_j} Σ_i (f_ij − y_ij)²,
#   DMSE2 = (1/P) Σ_j Σ_i (f_ij − Γ_i y_ij)²
#
# Below, one randomly initialised network (width 16) is held fixed and each loss is evaluated
# with Γ(t) over three periods. The static losses do not move; every dynamical loss equals its
# static version whenever Γ ≡ 1 (each period start).

# %%
x, y = spiral(points_per_class=100, n_classes=C, seed=0)  # the training set of the paper
model = flat_model(16, n_classes=C)
w_N = model.init(jax.random.key(0))
logits_PxC = model.apply(w_N, jnp.asarray(x))
print(f"network: width 16, {model.n_params} parameters; data: {x.shape[0]} points")

amplitude, period = 10.0, 200
ts = np.arange(0, 3 * period, 2)
gammas = jax.vmap(lambda t: gamma(t, n_classes=C, amplitude=amplitude, period=period))(ts)
values = {
    name: jax.vmap(lambda g, f=fn: f(logits_PxC, y, g))(gammas) for name, fn in LOSSES.items()
}

fig, (ax_ce, ax_mse) = plt.subplots(1, 2, figsize=(12, 3.5), constrained_layout=True)
for name in ("ce", "dce"):
    ax_ce.plot(ts, values[name], label=name.upper())
for name in ("mse", "dmse1", "dmse2"):
    ax_mse.plot(ts, values[name], label=name.upper())
for ax in (ax_ce, ax_mse):
    for k in range(4):
        ax.axvline(k * period, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("step t (network held fixed)")
    ax.legend()
ax_ce.set_ylabel("loss")
ax_ce.set_title(f"cross-entropy family, A = {amplitude:g}, T = {period}", fontsize=10)
ax_mse.set_title("mean-squared-error family", fontsize=10)
plt.show()
for name in ("dce", "dmse1", "dmse2"):
    static = "ce" if name == "dce" else "mse"
    v = np.asarray(values[name])
    print(
        f"{name:>5}: {v[0]:.6f} at Γ ≡ 1 (= {static} {float(values[static][0]):.6f}), "
        f"{v.min():.4f} … {v.max():.4f} over the periods"
    )

# %% [markdown]
# ## 3. CE and DCE trained side by side
#
# Full-batch gradient descent at η = 1 on the spiral, one compiled program for both runs
# (`run_sweep`). The DCE run uses A = 70; its last period is static (Γ ≡ 1), as in Fig. 3 of the
# paper, so the final accuracies of both runs are measured on the same landscape. Dotted lines:
# the static loss (CE) of the DCE run; dashed lines: validation accuracy (spiral drawn with
# another seed). One seed is an anecdote: averages over seeds and widths are in
# `03_sweeps.py`.

# %%
width = 16
period = 400 if SMOKE else 5000
config = SweepConfig(
    loss=("ce", "dce"),
    width=(width,),
    eta=(1.0,),
    amplitude=(70.0,),
    period=(period,),
    seeds=1,
    steps=(3 if SMOKE else 4) * period,
    record_every=10,
    static_last_period=True,
)
run = run_sweep(config)
print(run)

# %%
steps = run["record_step"]
fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
for loss_name, color in (("ce", "C0"), ("dce", "C3")):
    r = run.sel(loss=loss_name)
    axes[0].semilogy(steps, r["loss"].ravel(), color=color, label=f"{loss_name.upper()}: F(t)")
    if loss_name == "dce":
        axes[0].semilogy(
            steps, r["static_loss"].ravel(), color=color, ls=":", lw=1, label="DCE run: its CE"
        )
    axes[1].plot(
        steps, r["train_acc"].ravel(), color=color, lw=0.8, label=f"{loss_name.upper()} train"
    )
    axes[1].plot(
        steps,
        r["val_acc"].ravel(),
        color=color,
        ls="--",
        lw=0.6,
        label=f"{loss_name.upper()} validation",
    )
gamma_RxC = run.sel(loss="dce")["gamma"].reshape(len(steps), C)
for i in range(C):
    axes[2].plot(steps, gamma_RxC[:, i], label=f"Γ{i}")
axes[0].set_ylabel("loss")
axes[1].set_ylabel("accuracy")
axes[2].set_ylabel("Γ_i(t) of the DCE run")
axes[2].set_xlabel("step t")
for ax in axes:
    ax.legend(fontsize=8, loc="best")
plt.show()

for loss_name in ("ce", "dce"):
    r = run.sel(loss=loss_name)
    print(
        f"{loss_name.upper():>3}: final train accuracy {r['final_train_acc'].item():.3f}, "
        f"validation accuracy {r['final_val_acc'].item():.3f}"
    )
