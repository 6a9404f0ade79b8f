"""Where a loss-based onset rule fires on a driven period-2 response: the eagerness relation.

Model (the top Hessian direction of GD, one coordinate). The valley floor drifts at speed v
per step (the background Γ(t) moves), the top curvature ramps linearly, ηλ1(t) = ηλ1(0) + κt
(κ = η·λ̇1, the sharpening speed per step in units of η), and a small period-2 forcing f(−1)^t
plus white noise σξ_t drives the coordinate x measured from the floor:

    x_{t+1} = (1 − ηλ1(t)) x_t − v + f(−1)^t + σ ξ_t,
    F(t)    = ½ λ1(t) x_t² + F0 − b t                      (the recorded loss).

Below 2/η the multiplier 1 − ηλ1 = −(1 − δ) with δ = 2 − ηλ1, and the quasi-static solution is
x = s + a(−1)^t with the lag s = −v/(ηλ1) and the driven response a = f/δ. The alternating part
of F is λ1·s·a = −(v/η)·f/δ: it grows like 1/(2 − ηλ1), at the per-step rate

    d ln a/dt = κ/δ.

A rule that fires once this rate reaches ln g fires at δ = κ/ln g, i.e. at

    η·λ1/2 = 1 − κ/(2 ln g) = 1 − η·λ̇1/(2 ln g)                     (the eagerness relation).

The quasi-static solution lags the exact one; its relative error in the rate is about 2κ/δ²
= 2(ln g)²/κ at the firing point, so the relation is a good approximation when κ ≫ (ln g)².

    python -m benchmarks.eagerness      # the table for the settings of tests/test_eagerness.py
"""

from __future__ import annotations

import math

import numpy as np


def driven_series(
    kappa: float,
    eta_lam0: float = 0.2,
    eta_lam1: float = 2.05,
    eta: float = 1.0,
    v: float = 0.05,
    f: float = 1e-4,
    sigma: float = 1e-6,
    f0: float = 1.0,
    b: float = 1e-5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The loss F(t) of the model above and ηλ1(t), from ηλ1 = ``eta_lam0`` to ``eta_lam1`` at
    ``kappa`` per step; both of shape (T,), float64. x starts at its quasi-static value."""
    eta_lam = np.arange(eta_lam0, eta_lam1, kappa)
    rng = np.random.default_rng(seed)
    noise = sigma * rng.standard_normal(eta_lam.size)
    x = -v / eta_lam[0] + f / (2 - eta_lam[0])
    loss = np.empty(eta_lam.size)
    for t, el in enumerate(eta_lam):
        loss[t] = 0.5 * (el / eta) * x * x + f0 - b * t
        x = (1 - el) * x - v + f * (-1.0) ** (t + 1) + noise[t]
    return loss, eta_lam


def predicted(kappa: float, growth: float) -> float:
    """η·λ1/2 where the driven response's growth rate κ/(2 − ηλ1) reaches ln ``growth``."""
    return 1 - kappa / (2 * math.log(growth))


def fired_at(loss, eta_lam, detector: str, n: int) -> tuple[float, float] | None:
    """(η·λ1/2 at the middle of the rule's growth fit, at its reported onset), or None when it
    does not fire. The calibrated rule fits the growth over the last ``n`` values of p up to
    the confirming step hi, so the rate it measures is that of step hi − (n − 1)/2; the onset
    it reports is hi − n − 3 (the start of the stretch)."""
    from dynloss_jax.instability import first_instability

    onset, _, hi = first_instability(loss, detector, interval=True)
    if onset < 0:
        return None
    centre = hi - (n - 1) / 2
    return float(np.interp(centre, np.arange(eta_lam.size), eta_lam)) / 2, eta_lam[onset] / 2


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    print("kappa  growth  k   predicted  at fit centre  at onset")
    for kappa, growth in ((0.002, 1.01), (0.004, 1.01), (0.006, 1.05), (0.01, 1.05)):
        for k in (5, 2):
            det = f"calibrated:growth={growth},k={k}"
            loss, eta_lam = driven_series(kappa)
            got = fired_at(loss, eta_lam, det, 24)
            cells = ("  —  ", "  —  ") if got is None else (f"{got[0]:.3f}", f"{got[1]:.3f}")
            print(
                f"{kappa:<6} {growth:<7} {k:<3} {predicted(kappa, growth):.3f}      "
                f"{cells[0]}          {cells[1]}"
            )


if __name__ == "__main__":
    main()
