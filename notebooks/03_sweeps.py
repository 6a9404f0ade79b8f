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
# # Sweeps from Python: run, save, load, select, summarise
#
# One call of `run_sweep` trains every combination of widths × amplitudes A × seeds — here
# dynamical cross-entropy at η = 1, with A = 1 standing for the static loss (plain CE) — as a
# few compiled programs, one per width, each mapping over its runs (vmapped in blocks and split
# over the devices). The results folder is then read back with `load_run`, narrowed with
# `run.sel(...)`, averaged over seeds with `run.summary(...)` (mean and standard error, diverged
# runs left out), and plotted with error bars: validation accuracy against width, as in Fig. 3a of
# the paper (whose last period is static, Γ ≡ 1, so that every run ends on the same landscape).
#
# Set `SMOKE=1` in the environment for a seconds-long version with the same cells (what the test
# suite runs).

# %%
import os
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

import dynloss_jax
from dynloss_jax import SweepConfig, default_strategy, load_run, run_sweep
from dynloss_jax.results import RunFolderError

SMOKE = os.environ.get("SMOKE") == "1"  # a seconds-long version of every cell
dynloss_jax.use_cpu_cores()  # every CPU core as a JAX device (before JAX's first computation)
jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## The sweep
#
# `SweepConfig` holds every setting; tuple fields are swept (their Cartesian product). It is
# validated before anything is compiled. The strategy — how many runs are vmapped together per
# device — is chosen per backend (small blocks on a CPU, all runs at once on a GPU).

# %%
if SMOKE:
    config = SweepConfig(
        loss=("dce",),
        width=(4, 8),
        eta=(1.0,),
        amplitude=(1.0, 70.0),
        period=(100,),
        seeds=2,
        steps=300,
        record_every=10,
        static_last_period=True,
    )
else:
    config = SweepConfig(
        loss=("dce",),
        width=(8, 16, 32, 64),
        eta=(1.0,),
        amplitude=(1.0, 10.0, 70.0),
        period=(5000,),
        seeds=5,
        steps=20_000,
        record_every=100,
        static_last_period=True,
    )
config.validate()
n_runs = int(np.prod(config.grid_shape))
print(
    f"{n_runs} runs × {config.steps} steps = {n_runs * config.steps:,} run-steps on "
    f"{len(jax.devices())} {jax.default_backend()} device(s), {default_strategy()}"
)

# %% [markdown]
# The results go to a folder: `config.json` (settings, axes, versions, git commit, the arrays'
# checksum) and `arrays.npz`. Re-running this cell reuses a finished folder with the same
# settings instead of training again (delete the folder to retrain, e.g. after changing the
# library).

# %%
OUT = Path("runs") / ("notebook-03-smoke" if SMOKE else "notebook-03")
try:
    reuse = load_run(OUT).config["settings"] == config.settings()
except RunFolderError:
    reuse = False
if not reuse:
    run_sweep(config, OUT, overwrite=True)
print(sorted(p.name for p in OUT.iterdir()))

# %% [markdown]
# ## Loading, selecting, summarising
#
# Every array has named axes: the sweep axes `(loss, width, eta, amplitude, period, seed)` first,
# then e.g. `record` (the steps in `run["record_step"]`). `sel` keeps values along sweep axes
# (a scalar keeps the axis with length 1); `summary` averages over the seed axis.

# %%
run = load_run(OUT)
print(run)
print("coords:", run.coords)
print("axes of val_acc:", run.axes["val_acc"], run["val_acc"].shape)
print("diverged runs:", int(run["diverged"].sum()), "of", run["diverged"].size)

mean, sem, n = run.summary("final_val_acc")  # shapes: (loss, width, eta, amplitude, period)
print("final validation accuracy, mean over seeds, shape", mean.shape)
widths = run.coords["width"]
for amplitude in run.coords["amplitude"]:
    m, e, k = (np.squeeze(a) for a in run.sel(amplitude=amplitude).summary("final_val_acc"))
    cells = "  ".join(
        f"{w:>3}: {mi:.3f} ± {ei:.3f}" for w, mi, ei in zip(widths, m, e, strict=True)
    )
    print(f"A = {amplitude:>4g} (n = {k.min()}–{k.max()} seeds)  {cells}")

# %% [markdown]
# ## Validation accuracy against width (error bars: standard error of the mean)

# %%
fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(12, 4), sharey=True, constrained_layout=True)
for i, amplitude in enumerate(run.coords["amplitude"]):
    label = "A = 1 (static: CE)" if amplitude == 1 else f"DCE, A = {amplitude:g}"
    for ax, name in ((ax_val, "final_val_acc"), (ax_train, "final_train_acc")):
        m, e, _ = (np.squeeze(a) for a in run.sel(amplitude=amplitude).summary(name))
        ax.errorbar(
            np.asarray(widths) * (1 + 0.04 * i), m, yerr=e, marker="o", capsize=3, label=label
        )
for ax, title in ((ax_val, "validation"), (ax_train, "train")):
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("width (hidden units)")
    ax.set_title(f"{title} accuracy at the end of the static last period", fontsize=10)
ax_val.set_ylabel("accuracy")
ax_val.legend()
plt.show()

# %% [markdown]
# ## Accuracy during training, one width (mean ± s.e.m. band over seeds)

# %%
width = widths[len(widths) // 2]
steps = run["record_step"]
fig, ax = plt.subplots(figsize=(10, 3.5), constrained_layout=True)
for amplitude in run.coords["amplitude"]:
    m, e, _ = (np.squeeze(a) for a in run.sel(width=width, amplitude=amplitude).summary("val_acc"))
    (line,) = ax.plot(steps, m, lw=1, label=f"A = {amplitude:g}")
    ax.fill_between(steps, m - e, m + e, color=line.get_color(), alpha=0.25, lw=0)
for k in range(1, config.steps // config.period[0]):
    ax.axvline(k * config.period[0], color="0.8", lw=0.8, zorder=0)
ax.set_xlabel("step t (grey: period boundaries)")
ax.set_ylabel("validation accuracy")
ax.set_title(f"width {width}", fontsize=10)
ax.legend()
plt.show()
