"""Fig. 4's per-run table: the declared onset definition, and the report's numbers recomputed
from the committed table."""

from __future__ import annotations

from dynloss_jax import SweepConfig
from dynloss_jax.instability import CALIBRATED, DEFAULT, get_detector
from experiments import fig4_instability


def test_declared_onset_definition_is_the_default():
    # declared in docs/reproduction.md (Fig. 4) before the per-run rerun: the calibrated rule
    # with k = 5, growth = 1.01, n = 24, window = 64, rise = 1e-3
    declared = "calibrated:k=5,growth=1.01,n=24,window=64,rise=0.001"
    assert DEFAULT == "calibrated"
    assert CALIBRATED == dict(k=5.0, growth=1.01, n=24, window=64, rise=1e-3)
    assert get_detector().name == declared
    assert get_detector(fig4_instability.FULL["detector"]).name == declared
    assert get_detector(SweepConfig().detector).name == declared
