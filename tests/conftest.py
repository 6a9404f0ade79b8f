"""Test settings: two host devices (so sharding is exercised on any CPU), float64 on, and most of
XLA's optimisations off: the suite compiles many small programs, and without them it passes
whole in about 20% less time (docs/results/suite_timing_disable_most_optimizations.json)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")
# read when JAX is imported; subprocesses of the tests (notebooks, the CLI) inherit it
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fresh_compiled_programs():
    """Drops JAX's compiled programs after each test module. One pytest process compiles a
    few thousand programs over the suite; holding them all grew the process past 5 GB, and a
    whole-suite run once crashed inside XLA's compiler near its end (a test that passes on
    its own). Programs are still shared within a module, where tests reuse them."""
    yield
    jax.clear_caches()
