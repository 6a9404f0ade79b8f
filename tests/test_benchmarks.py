"""The benchmark's baselines do the engine's work: same network, data, Γ and losses."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import authors_workflow as aw
from dynloss_jax import SweepConfig, run_sweep
from dynloss_jax.data import spiral
from dynloss_jax.model import flat_model


def test_both_baselines_compute_the_engines_losses_on_the_same_seed():
    """DCE, width 6, A = 5, T = 8, 24 steps: the authors' loop (metrics fetched every step, and
    kept on the device until the end) records CE of w_{t+1} after step t; the engine records CE
    of w_t at step t. They agree to rounding, and the two baselines agree exactly."""
    width, steps, seed = 6, 24, 3
    run = run_sweep(
        SweepConfig(
            loss=("dce",),
            width=(width,),
            eta=(0.5,),
            amplitude=(5.0,),
            period=(8,),
            first_seed=seed,
            steps=steps,
            record_every=1,
            points_per_class=5,
        )
    )
    model = flat_model(width)
    init_key, _ = jax.random.split(jax.random.key(seed))
    p = model.unravel(model.init(init_key))["params"]
    params = [
        (p["Dense_0"]["kernel"], p["Dense_0"]["bias"]),
        (p["Dense_1"]["kernel"], p["Dense_1"]["bias"]),
    ]
    x, y = (jnp.asarray(a) for a in spiral(5, seed=0))
    kw = dict(eta=0.5, amplitude=5.0, period=8, n_steps=steps, eig_every=0, key=jax.random.key(0))
    _, (sync_loss, sync_weighted, sync_acc, _, _) = aw.train(params, x, y, sync=True, **kw)
    _, (async_loss, async_weighted, async_acc, _, _) = aw.train(params, x, y, sync=False, **kw)
    assert sync_loss == async_loss and sync_weighted == async_weighted and sync_acc == async_acc
    engine_static = run["static_loss"].ravel()
    assert np.ptp(engine_static) > 1e-3  # the loss moves: the comparison means something
    np.testing.assert_allclose(sync_loss[:-1], engine_static[1:], rtol=1e-12)
    # their accuracy is a float32 mean of booleans: the same fractions, to float32 rounding
    np.testing.assert_allclose(sync_acc[:-1], run["train_acc"].ravel()[1:], rtol=1e-7)
