"""dynloss_jax: dynamical loss functions (Lavin & Ruiz-García 2024) in JAX.

Pure pieces: :func:`gamma` (the oscillating class weights), the losses in :mod:`losses`,
:func:`spiral` (the data), :func:`flat_model` (the network), :func:`top_hessian_eigenvalues`,
and the spectrum of any loss: :func:`spectral_density` (with :func:`density_on_grid`),
:func:`hessian_trace`, :func:`layer_sharpness`, :func:`smallest_eigenvalue`.
The compiled engine is :mod:`engine`; :func:`run_sweep` runs and saves sweeps — of the paper's
settings (:class:`SweepConfig`) or of a :class:`Task` made of a researcher's own model, data,
loss, Γ schedule (:mod:`schedule`'s factories and combinators, or any function) and optimiser,
over a grid of any of their parameters; :func:`load_run` reads them back.

Float64 (the default dtype) needs ``jax.config.update("jax_enable_x64", True)`` before the first
computation; the library never changes JAX's global configuration itself.
"""

from dynloss_jax import schedule
from dynloss_jax.config import ConfigError, SweepConfig
from dynloss_jax.data import spiral
from dynloss_jax.eig import top_hessian_eigenvalues
from dynloss_jax.losses import LOSSES, get_loss
from dynloss_jax.model import flat_model
from dynloss_jax.results import load_run
from dynloss_jax.schedule import gamma
from dynloss_jax.spectrum import (
    density_on_grid,
    hessian_trace,
    layer_sharpness,
    smallest_eigenvalue,
    spectral_density,
)
from dynloss_jax.strategy import Strategy, default_strategy, use_cpu_cores
from dynloss_jax.sweep import run_sweep
from dynloss_jax.task import Task, TaskError

__all__ = [
    "LOSSES",
    "ConfigError",
    "Strategy",
    "SweepConfig",
    "Task",
    "TaskError",
    "default_strategy",
    "density_on_grid",
    "flat_model",
    "gamma",
    "get_loss",
    "hessian_trace",
    "layer_sharpness",
    "load_run",
    "run_sweep",
    "schedule",
    "smallest_eigenvalue",
    "spectral_density",
    "spiral",
    "top_hessian_eigenvalues",
    "use_cpu_cores",
]
__version__ = "0.1.0"
