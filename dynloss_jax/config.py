"""The settings of a sweep: every field, its allowed range, and the errors that name it.

:class:`SweepConfig` holds every setting of a sweep (tuple fields are swept as a Cartesian
product) and validates them before anything is compiled or written; :class:`ConfigError` names
the setting, its value and the allowed range, so the CLI can turn it into one line naming the
flag.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dynloss_jax import engine
from dynloss_jax.losses import LOSSES
from dynloss_jax.model import DTYPES, INITS, check_dtype


class ConfigError(ValueError):
    """A setting outside its allowed range; ``param`` names the setting."""

    def __init__(self, param: str, value, allowed: str):
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param}={value!r}: {allowed}")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Every setting of a sweep. Tuple fields are swept (Cartesian product)."""

    loss: tuple[str, ...] = ("dce",)
    width: tuple[int, ...] = (100,)
    eta: tuple[float, ...] = (1.0,)
    amplitude: tuple[float, ...] = (70.0,)
    period: tuple[int, ...] = (5000,)
    seeds: int = 1  # seeds first_seed .. first_seed + seeds − 1
    first_seed: int = 0
    steps: int = 10_000
    record_every: int = 5
    eig_every: int = 0  # 0: no Hessian tracking
    num_matvecs: int = 16
    static_last_period: bool = False
    depth: int = 1
    init: str = "glorot"
    dtype: str = "float64"
    points_per_class: int = 100
    n_classes: int = 3
    train_seed: int = 0
    val_seed: int = 1
    chunk_steps: int = 5000  # checkpoint/progress granularity (rounded to divide the run)

    def __post_init__(self):
        for name in ("loss", "width", "eta", "amplitude", "period"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> SweepConfig:
        """Raises :class:`ConfigError` (a ``ValueError``) for the first invalid setting."""
        for name in ("loss", "width", "eta", "amplitude", "period"):
            if len(getattr(self, name)) == 0:
                raise ConfigError(name, [], "needs at least one value")
        for v in self.loss:
            if v not in LOSSES:
                raise ConfigError("loss", v, f"must be one of {', '.join(LOSSES)}")
        for v in self.width:
            if not _is_int(v) or v < 1:
                raise ConfigError("width", v, "must be an integer >= 1")
        for v in self.eta:
            if not _is_real(v) or not math.isfinite(v) or v <= 0:
                raise ConfigError("eta", v, "must be finite and > 0")
        for v in self.amplitude:
            if not _is_real(v) or not math.isfinite(v) or v < 1:
                raise ConfigError("amplitude", v, "must be finite and >= 1 (1 = static loss)")
        for v in self.period:
            if not _is_int(v) or v < 1:
                raise ConfigError("period", v, "must be an integer >= 1 (steps)")
        positive = {"seeds": self.seeds, "steps": self.steps, "record_every": self.record_every,
                    "depth": self.depth, "chunk_steps": self.chunk_steps}
        for name, v in positive.items():
            if not _is_int(v) or v < 1:
                raise ConfigError(name, v, "must be an integer >= 1")
        if not _is_int(self.points_per_class) or self.points_per_class < 2:
            raise ConfigError("points_per_class", self.points_per_class,
                              "must be an integer >= 2")
        if not _is_int(self.n_classes) or self.n_classes < 2:
            raise ConfigError("n_classes", self.n_classes, "must be an integer >= 2")
        for name in ("first_seed", "train_seed", "val_seed"):
            v = getattr(self, name)
            if not _is_int(v) or not 0 <= v < 2**31 - self.seeds:
                raise ConfigError(name, v, f"must be an integer in [0, {2**31 - self.seeds})")
        if not _is_int(self.eig_every) or self.eig_every < 0:
            raise ConfigError("eig_every", self.eig_every, "must be an integer >= 0 (0 = off)")
        if self.steps % self.record_every:
            raise ConfigError("record_every", self.record_every,
                              f"must divide --steps ({self.steps})")
        if self.eig_every:
            if self.eig_every % self.record_every:
                raise ConfigError("eig_every", self.eig_every,
                                  f"must be a multiple of --record-every ({self.record_every})")
            if self.steps % self.eig_every:
                raise ConfigError("eig_every", self.eig_every,
                                  f"must divide --steps ({self.steps})")
            if not _is_int(self.num_matvecs) or self.num_matvecs < engine.N_TOP:
                raise ConfigError("num_matvecs", self.num_matvecs,
                                  f"must be an integer >= {engine.N_TOP}")
        if self.init not in INITS:
            raise ConfigError("init", self.init, f"must be one of {', '.join(INITS)}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")
        try:
            check_dtype(self.dtype)
        except ValueError as e:
            raise ConfigError("dtype", self.dtype, str(e)) from None
        return self

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (len(self.loss), len(self.width), len(self.eta), len(self.amplitude),
                len(self.period), self.seeds)

    @property
    def chunk(self) -> int:
        """Steps per chunk: a multiple of the measurement interval that divides ``steps``."""
        interval = self.eig_every or self.record_every
        n_intervals = self.steps // interval
        best = 1
        for d in range(1, n_intervals + 1):
            if n_intervals % d == 0 and d * interval <= max(self.chunk_steps, interval):
                best = d
        return best * interval

    def settings(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_settings(cls, settings: dict) -> SweepConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names})


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
