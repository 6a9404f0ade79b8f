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
# # Your own dynamical loss, model and data, through the same engine
#
# A dynamical loss of our own invention — a *focal* dynamical cross-entropy, whose samples are
# weighted by Γ of their class and by (1 − p_true)^focus — on the handwritten digits of
# scikit-learn (10 classes, 64 features), with a small flax network of our own. Everything the
# paper's losses get comes with it: the compiled, vmapped sweep over a grid of *any* of the
# functions' parameters (here the amplitude A, with A = 1 the static loss, and `focus`),
# warm-started λ1, λ2 tracking, checkpoints, `load_run` and `to_xarray`.
#
# Set `SMOKE=1` in the environment for a seconds-long version with the same cells (what the test
# suite runs).

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import dynloss_jax
import dynloss_jax as dl

SMOKE = os.environ.get("SMOKE") == "1"  # a seconds-long version of every cell
dynloss_jax.use_cpu_cores()
jax.config.update("jax_enable_x64", True)

# %% [markdown]
# The pieces are plain functions and a flax module. The loss takes `(logits, y_onehot, gamma,
# **hyperparameters)`; the schedule `(step, n_classes, **hyperparameters)` — here the paper's
# triangle, with the last period static so that every run ends on the static landscape.


# %%
def focal_dce(logits, y_onehot, gamma, focus):
    p_true = jnp.sum(jax.nn.softmax(logits) * y_onehot, -1)
    log_p = jnp.sum(y_onehot * jax.nn.log_softmax(logits), -1)
    return -jnp.mean((1 - p_true) ** focus * (y_onehot @ gamma) * log_p)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(jnp.tanh(nn.Dense(8)(x)))  # small: where the paper saw gains


task = dl.Task(model=Net(), data="digits", loss=focal_dce, schedule=dl.schedule.triangle())

# %% [markdown]
# One call sweeps A × focus × seeds; `static_last_period` wraps the schedule in the
# `last_period_static` combinator. Grid names are routed to the function that takes them.
# η = 4 was chosen so that λ1 reaches 2/η at all: a first try at width 32 and η = 1 stayed far
# below the line for the whole run, and showed nothing of the edge of stability.

# %%
eta, period = 4.0, (20 if SMOKE else 100)
steps = period * (2 if SMOKE else 21)  # two cycles of the 10 classes, then one static period
grid = dict(
    eta=[eta],
    amplitude=[1.0, 20.0],
    focus=[0.0, 1.0],
    period=[period],
    seed=range(2 if SMOKE else 3),
)
run = dl.run_sweep(
    task, grid=grid, steps=steps, eig_every=period // 4, record_every=period // 4,
    static_last_period=True,
)  # fmt: skip
print(run)

# %% [markdown]
# λ1 against the edge-of-stability line 2/η, and the share of measurements above it.

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
lam1 = run["lam"][..., 0]  # (eta, amplitude, focus, period, seed, eig)
for ai, amplitude in enumerate(run.coords["amplitude"]):
    for fi, focus in enumerate(run.coords["focus"]):
        ax.plot(run["eig_step"], np.nanmean(lam1[0, ai, fi, 0], axis=0),
                label=f"A={amplitude:g}, focus={focus:g}")  # fmt: skip
ax.axhline(2 / eta, color="k", ls="--", lw=1, label="2/η")
ax.set_xlabel("step")
ax.set_ylabel("λ1 (mean over seeds)")
ax.legend(fontsize=8, ncol=3)
fig.savefig("own_loss_lambda.png", dpi=100)
above = np.nanmean(lam1 * eta / 2 > 1, axis=(-1, -2))[0, :, :, 0]  # (amplitude, focus)
print("share of λ1 measurements above 2/η (rows A, columns focus):\n", above.round(3))

# %% [markdown]
# The gain over the static loss, seed by seed (same initialisation): validation accuracy at the
# end (after the static last period) of A = 20 minus A = 1. On the digits this invented loss
# does not beat its static version: in the stored full run
# (`docs/results/notebook_05_own_loss/05_own_loss.json`, 3 seeds) the change is −0.002 ± 0.002
# at focus 0 and −0.004 ± 0.001 at focus 1 — no gain, and a small loss with focusing: a
# negative result, stated as such.

# %%
gain, sem, n = run.paired("final_val_acc", "amplitude", 20.0, 1.0)
for fi, focus in enumerate(run.coords["focus"]):
    print(f"focus={focus:g}: Δ val acc = {np.squeeze(gain)[fi]:+.4f} ± {np.squeeze(sem)[fi]:.4f}"
          f" (n = {int(np.squeeze(n)[fi])})")  # fmt: skip
ds = run.to_xarray()
assert {"amplitude", "focus", "seed"} <= set(ds.dims)
assert np.all(np.isfinite(run["lam"]))
if not SMOKE:
    import json
    import platform
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(dl.__file__)),
    ).stdout.strip()
    summary = {
        "command": "python notebooks/05_your_own_loss.py",
        "git_commit": commit or None,
        "environment": {"python": platform.python_version(), "jax": jax.__version__,
                        "cpus": os.cpu_count(), "processor": platform.machine()},
        "settings": dict(width=8, eta=eta, period=period, steps=steps, amplitude=[1.0, 20.0],
                         focus=run.coords["focus"], seeds=len(run.coords["seed"])),
        "gain_val_acc": {"focus": run.coords["focus"], "mean": np.squeeze(gain).tolist(),
                         "sem": np.squeeze(sem).tolist()},
        "share_above_2_over_eta": {"rows_amplitude": [1.0, 20.0], "values": above.tolist()},
        "val_acc_mean": np.squeeze(run.summary("final_val_acc")[0]).tolist(),
    }  # fmt: skip
    with open("05_own_loss.json", "w") as f:
        json.dump(summary, f, indent=2)
