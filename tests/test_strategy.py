"""Execution strategies give the same numbers as one device running the runs one by one.

Every layout of R runs on the hardware — sequential ``lax.map``, vmapped blocks, one vmap over all
runs, split over two host devices with ``shard_map`` (conftest exposes two) — must reproduce the
single-device sequential arrays to rounding (float64), with Hessian tracking on, an odd number of
runs (padded to the device count) and one run that diverges.
"""

import dataclasses

import jax
import numpy as np
import pytest

from dynloss_jax import engine, strategy
from dynloss_jax.data import make_data, spiral
from dynloss_jax.spec import RunSpec, make_hyper
from dynloss_jax.strategy import Strategy, default_strategy
from dynloss_jax.sweep import SweepConfig, run_sweep

RTOL = ATOL = 1e-12
SPEC = RunSpec(
    loss="dce",
    width=6,
    n_steps=20,
    record_every=2,
    eig_every=10,
    num_matvecs=6,
    static_last_period=True,
)
# Five runs (odd): different η, A, T and seeds; the last one's η makes it diverge.
ETA = [0.5, 1.0, 2.0, 0.7, 1e200]
AMPLITUDE = [3.0, 10.0, 1.0, 25.0, 5.0]
PERIOD = [10, 5, 10, 20, 10]
SEED = [0, 1, 2, 3, 4]


def _data():
    x, y = spiral(4, seed=0)
    xv, yv = spiral(4, seed=1)
    return make_data(x, y, xv, yv)


def _run(batch_size, n_devices):
    """All five runs (padded to the device count, as the sweep pads) → host arrays, unpadded."""
    layout = Strategy(batch_size, n_devices)
    hyper = layout.pad_runs(make_hyper(eta=ETA, amplitude=AMPLITUDE, period=PERIOD, seed=SEED))
    data = _data()
    init, advance, finalize = engine.compiled(SPEC, SPEC.n_steps, layout)
    state = init(hyper, data)
    state, records, eig_records, _ = advance(state, hyper, data)
    final = finalize(state, hyper, data)
    out = {"state": state, "records": records, "eig": eig_records, "final": final}
    return strategy.gather(out, len(ETA))


@pytest.fixture(scope="module")
def reference():
    return _run(batch_size=1, n_devices=1)


def _assert_same(got, want):
    flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_want = jax.tree.leaves(want)
    assert len(flat_got) == len(flat_want)
    for (path, g), w in zip(flat_got, flat_want, strict=True):
        name = jax.tree_util.keystr(path)
        assert g.shape == w.shape, name
        if g.dtype.kind in "biu" or g.dtype == bool:
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name)


def test_reference_is_a_meaningful_case(reference):
    """The comparison covers finite runs, a diverged run and measured eigenvalues."""
    diverged = reference["state"].diverged
    assert diverged.tolist() == [False, False, False, False, True]
    assert np.isfinite(reference["eig"].lam_K[:4]).all()
    assert np.isnan(reference["records"].loss[4, -1])
    assert len(jax.devices()) == 2, "conftest should expose two host devices"


@pytest.mark.parametrize(
    "batch_size, n_devices",
    [
        (2, 1),  # vmapped blocks of 2, mapped sequentially (5 = 2 + 2 + 1)
        (1, 2),  # sequential on each of two devices (shard_map), padded to 6 runs
        (0, 2),  # one vmap over all runs of each device
    ],
)
def test_strategy_matches_single_device_sequential(reference, batch_size, n_devices):
    _assert_same(_run(batch_size, n_devices), reference)


def test_sweep_over_two_devices_matches_one():
    """run_sweep pads an odd number of runs to the devices and returns the same arrays (the
    settings equal SPEC's, so the programs compiled above are reused)."""
    config = SweepConfig(
        loss=("dce",),
        width=(SPEC.width,),
        eta=(0.7,),
        amplitude=(5.0,),
        period=(10,),
        seeds=5,
        steps=SPEC.n_steps,
        record_every=SPEC.record_every,
        eig_every=SPEC.eig_every,
        num_matvecs=SPEC.num_matvecs,
        static_last_period=True,
        points_per_class=4,
        chunk_steps=SPEC.n_steps,
    )
    one = run_sweep(config, strategy=Strategy(batch_size=1, n_devices=1))
    two = run_sweep(config, strategy=Strategy(batch_size=0, n_devices=2))
    assert one.arrays["loss"].shape[-2] == 5 and np.isfinite(one.arrays["lam"]).all()
    assert one.arrays.keys() == two.arrays.keys()
    for name, a in one.arrays.items():
        np.testing.assert_allclose(
            two.arrays[name], a, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name
        )


def test_default_strategy_per_backend():
    cpu = default_strategy("cpu")
    assert cpu == Strategy(strategy.CPU_BATCH_SIZE, 0)
    for accelerator in ("gpu", "tpu"):
        assert default_strategy(accelerator) == Strategy(batch_size=0, n_devices=0, pad_widths=True)
    assert not cpu.pad_widths


@pytest.mark.parametrize("field", ["batch_size", "n_devices"])
@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_strategy_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        Strategy(**{field: value})
    with pytest.raises(ValueError, match="pad_widths"):
        Strategy(pad_widths=1)


def test_fig3_full_is_54_programs_separate_and_2_padded():
    from experiments import fig3_width_sweep as fig3

    configs = [fig3.config_of(fig3.FULL, panel) for panel in ("a", "b")]
    assert [len(c.programs()) for c in configs] == [18, 36]
    padded = [c.programs(pad_widths=True) for c in configs]
    assert [len(p) for p in padded] == [1, 1]
    a = padded[0][0]
    assert a["loss"] == ("ce", "dce") and a["width"] == fig3.FULL["widths"]
    assert a["cells"] == [(li, wi) for li in range(2) for wi in range(9)]
    runs = configs[0].program_runs(a)
    assert runs["member"] == [m for m in range(2) for _ in range(9 * 50)]
    assert runs["width_index"] == [w for _ in range(2) for w in range(9) for _ in range(50)]
    assert runs["seed"] == list(range(50)) * 18
    # mixed families: one program each, in the order the losses are given
    mixed = SweepConfig(loss=("mse", "dce", "dmse2", "ce"), width=(3,))
    assert [p["loss"] for p in mixed.programs(pad_widths=True)] == [("mse", "dmse2"), ("dce", "ce")]


def test_mesh_uses_the_requested_devices():
    assert Strategy(n_devices=1).mesh() is None
    mesh = Strategy(n_devices=0).mesh()
    assert mesh.devices.size == len(jax.devices()) and mesh.axis_names == ("runs",)
    with pytest.raises(ValueError, match="n_devices"):
        Strategy(n_devices=len(jax.devices()) + 1).mesh()


def test_use_cpu_cores_keeps_a_user_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    strategy.use_cpu_cores(7)
    assert strategy.host_device_count() == 3
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    strategy.use_cpu_cores(5)
    assert strategy.host_device_count() == 5
    assert "--xla_cpu_enable_fast_math=false" in strategy.os.environ["XLA_FLAGS"]


def test_equal_specs_share_one_program_and_unequal_ones_do_not():
    """compiled() caches on the spec and layout: an equal spec reuses the program, a spec or a
    layout that differs in any field gets its own."""
    programs = engine.compiled(SPEC, 20, Strategy(1, 1))
    assert engine.compiled(dataclasses.replace(SPEC), 20, Strategy(1, 1)) is programs
    assert (
        engine.compiled(dataclasses.replace(SPEC, num_matvecs=7), 20, Strategy(1, 1))
        is not programs
    )
    assert engine.compiled(SPEC, 20, Strategy(2, 1)) is not programs
    assert engine.compiled(SPEC, 10, Strategy(1, 1)) is not programs
