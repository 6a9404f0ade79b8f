"""benchmarks.step_bytes: the hand bound, the loop-scaled HLO walk, and the GPU arithmetic."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import step_bytes
from dynloss_jax.data import spiral
from dynloss_jax.model import flat_model

TINY = dict(width=4, points_per_class=4, record_every=5, num_matvecs=4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hand_bound_is_the_bytes_of_the_step_arrays(dtype):
    """B_min from the formula equals the bytes of the arrays it names, built directly: the
    hidden activations h written and read, w read, the gradient written and read, the new w
    written, the data shared by R runs; per HVP the tangent of h written and read, v and Hv."""
    runs, every, m = 3, 5, 4
    model = flat_model(TINY["width"], dtype=dtype)
    x, y = (jnp.asarray(a, dtype) for a in spiral(TINY["points_per_class"], seed=0))

    def hidden(w):
        p = model.unravel(w)["params"]["Dense_0"]
        return jax.nn.relu(x @ p["kernel"] + p["bias"])

    def nbytes(a):
        return a.size * np.dtype(a.dtype).itemsize

    w = jax.eval_shape(model.init, jax.random.key(0))
    h = jax.eval_shape(hidden, w)
    grad = jax.eval_shape(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)), w)
    w_new = jax.eval_shape(lambda a, b: a - b, w, grad)
    step = 2 * nbytes(h) + nbytes(w) + 2 * nbytes(grad) + nbytes(w_new)
    step += (nbytes(x) + nbytes(y)) / runs
    hvp = 2 * nbytes(h) + 2 * nbytes(w)
    bound = step_bytes.hand_bytes(
        points=x.shape[0],
        width=TINY["width"],
        n_params=model.n_params,
        n_inputs=x.shape[1],
        n_classes=y.shape[1],
        itemsize=np.dtype(dtype).itemsize,
        runs=runs,
        eig_every=every,
        num_matvecs=m,
    )
    assert bound["total"] == pytest.approx(step + m * hvp / every, rel=1e-12)


def test_walk_counts_a_loop_body_as_often_as_it_runs():
    """A fori_loop of 10 elementwise passes over 1000 float64: XLA's cost analysis and the walk
    with loops once see one pass (8 kB read, 8 kB written); the scaled walk sees ten."""
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 10, lambda i, v: v * 1.5 + 1.0, x))
    compiled = f.lower(jnp.zeros(1000)).compile()
    text = compiled.as_text()
    once = step_bytes.hlo_cost(text, scale_loops=False)
    scaled = step_bytes.hlo_cost(text)
    assert scaled["unknown_trip_counts"] == 0
    assert once["bytes"] == pytest.approx(step_bytes.xla_cost(compiled)["bytes"], rel=0.05)
    assert scaled["bytes"] - once["bytes"] == pytest.approx(9 * 16_000, abs=1_000)


def test_seed_step_bytes_are_positive_and_above_the_hand_bound():
    """Width 4, 12 points, 2 runs, λ every 5 steps from 4 products, programs of 5 and 10 steps:
    the walk with loops once reproduces XLA's totals; XLA's totals barely move with the step
    count (loop bodies once), the scaled walk grows; bytes per seed-step lie above B_min."""
    row = step_bytes.measure(2, "float64", 5, steps=(5, 10), **TINY)
    for t in ("5", "10"):
        assert row["walk_once_over_xla"][t]["bytes"] == pytest.approx(1.0, abs=0.05)
        assert row["walk_once_over_xla"][t]["flops"] == pytest.approx(1.0, abs=0.05)
    xla = row["xla_cost_analysis"]
    grown = row["walk"]["10"]["bytes"] - row["walk"]["5"]["bytes"]
    assert abs(xla["10"]["bytes"] - xla["5"]["bytes"]) < 0.2 * grown, (
        "XLA's cost analysis now grows with the step count: it may count loop trips; "
        "revisit the loop notes in benchmarks/step_bytes.py"
    )
    per = row["per_seed_step"]
    assert per["bytes"] > 0 and per["flops"] > 0
    assert per["bytes"] >= row["hand_lower_bound"]["total"]
    assert row["ops_per_step"]["fusion"] > 0


def test_gpu_rows_multiply_the_stored_rate_by_the_bytes(tmp_path):
    path = tmp_path / "gpu_check.json"
    stored = {"parts": {"big": {"f32": {"seed_steps_per_s": 1e6}}}}
    path.write_text(json.dumps(stored))
    row = {
        "runs": 1024,
        "dtype": "float32",
        "eig_every": 25,
        "per_seed_step": {"bytes": 2.4e6, "flops": 1e6},
        "hand_lower_bound": {"total": 4.8e5},
        "ops_per_step": {"fusion": 80.0, "copy": 14.0, "dot": 6.0, "fusion with transpose": 9.0},
    }
    (g,) = step_bytes.gpu_rows([row], path)["rows"]
    assert g["bytes_per_s"] == pytest.approx(2.4e12)
    assert g["fraction_of_hbm"] == pytest.approx(0.5)
    assert g["bound_fraction_of_hbm"] == pytest.approx(0.1)
    assert g["step_us"] == pytest.approx(1024.0) and g["ops_per_step"] == 100.0
