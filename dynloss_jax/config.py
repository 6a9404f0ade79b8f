"""The settings of a sweep, declared once: name, type, default, allowed range and help.

:class:`SweepConfig` is the only list of settings. Each field carries a :class:`Rule` (its kind
and allowed range) and a help text in its metadata; from them come

* :meth:`SweepConfig.validate` — the one place where settings are checked, raising
  :class:`ConfigError` (a ``ValueError`` naming the setting, its value and the allowed range);
* the ``dynloss train`` flags, their help and one-line errors (:mod:`dynloss_jax.cli` reads
  :func:`fields`);
* the swept per-run arrays (:meth:`SweepConfig.runs`, by name) and the data
  (:meth:`SweepConfig.dataset`, :meth:`SweepConfig.arrays`);
* the static description of a compiled program: the settings of :class:`ProgramSettings`, which
  :class:`SweepConfig` and the engine's :class:`~dynloss_jax.spec.RunSpec` share (a sweep's
  ``RunSpec`` comes from :meth:`~dynloss_jax.spec.RunSpec.from_config`).

Adding a setting is adding a field here and using it where it acts.

Fields whose type is a tuple are *grid axes*: the sweep is their Cartesian product with the
seeds (``seeds`` seeds from ``first_seed`` on), in the order of :data:`GRID_AXES`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from dynloss_jax.data import DATASETS, Data, MissingExtraError, make_data
from dynloss_jax.grid import Grid, steps_for
from dynloss_jax.instability import DEFAULT as DEFAULT_DETECTOR
from dynloss_jax.instability import NAMES as DETECTORS
from dynloss_jax.instability import get_detector
from dynloss_jax.losses import LOSSES
from dynloss_jax.model import DTYPES, INITS, check_dtype
from dynloss_jax.optim import ADAPTIVE as ADAPTIVE_NAMES
from dynloss_jax.optim import HYPERPARAMS
from dynloss_jax.schedule import WAVEFORMS

GRID_AXES = ("loss", "width", "eta", "amplitude", "period", "seed")
N_TOP = 2  # λ1, λ2: the eigenvalues tracked during training
SEED_LIMIT = 2**31


class ConfigError(ValueError):
    """A setting outside its allowed range; ``param`` names the setting."""

    def __init__(self, param: str, value, allowed: str):
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param}={value!r}: {allowed}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one value of a setting is checked (``ok``) and parsed on the command line (``kind``:
    ``int``, ``real``, ``str`` or ``bool``); ``allowed`` is the text of the error."""

    kind: str
    allowed: str
    ok: Callable = dataclasses.field(default=lambda v: True, compare=False)
    choices: tuple = ()


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def integer(low: int, note: str = "") -> Rule:
    return Rule("int", f"must be an integer >= {low}{note}", lambda v: _is_int(v) and v >= low)


def real(low: float, *, strict: bool, note: str = "") -> Rule:
    op = ">" if strict else ">="
    return Rule(
        "real",
        f"must be finite and {op} {low:g}{note}",
        lambda v: _is_real(v) and math.isfinite(v) and (v > low if strict else v >= low),
    )


def fraction() -> Rule:
    return Rule("real", "must be in [0, 1)", lambda v: _is_real(v) and 0 <= v < 1)


def choice(names) -> Rule:
    names = tuple(names)
    return Rule(
        "str",
        f"must be one of {', '.join(names)}",
        lambda v: isinstance(v, str) and v in names,
        names,
    )


# Seeds: the range (below 2^31 − seeds, so that every seed of the sweep is an int32) is checked
# by SweepConfig.validate, which knows the number of seeds.
SEED = Rule("int", "must be an integer >= 0", _is_int)
FLAG = Rule("bool", "must be true or false", lambda v: isinstance(v, (bool, np.bool_)))


def _is_detector(v) -> bool:
    if v is None:  # no onset rule: nothing of the onset is compiled (a task's default)
        return True
    try:
        get_detector(v)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


DETECTOR = Rule(
    "str",
    f"must name a rule ({', '.join(DETECTORS)}), optionally with :key=value,... "
    "(see dynloss_jax.instability)",
    _is_detector,
)


def setting(default, rule: Rule, help: str, *, cli: bool = True):
    """A field of :class:`SweepConfig` with its rule and help text (``cli``: has a flag)."""
    return dataclasses.field(default=default, metadata={"rule": rule, "help": help, "cli": cli})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgramSettings:
    """The settings a compiled program is built from: static, so changing one recompiles. Both
    :class:`SweepConfig` and the engine's :class:`~dynloss_jax.spec.RunSpec` are made of them."""

    record_every: int = setting(5, integer(1), "loss and accuracy every k steps")
    eig_every: int = setting(0, integer(0, " (0 = off)"), "Hessian λ1, λ2 every k steps")
    num_matvecs: int = setting(16, integer(1), "Lanczos steps per measurement")
    top_k: int = setting(
        0,
        integer(0, " (0 = off: λ1, λ2 by Lanczos)"),
        "with --eig-every: track the top K eigenvalues instead, by a block Krylov space "
        "warm-started from the last measurement's K vectors (--top-k-blocks × K products; "
        "λ_min is then not measured), with lam_above marking those above --top-k-above/η",
    )
    top_k_blocks: int = setting(
        3, integer(2), "with --top-k: Krylov blocks per measurement (each K products)"
    )
    top_k_above: float = setting(
        1.5,
        real(0, strict=True),
        "with --top-k: an eigenvalue counts as above the line when λ > c/η (GD; c/2 × the "
        "optimiser's threshold otherwise); 1.5 is the central flows' tracking line",
    )
    waveform: str = setting(
        "triangle",
        choice(WAVEFORMS),
        "shape of Γ over a period: " + " ".join(WAVEFORMS) + " (the paper's is the triangle)",
    )
    static_last_period: bool = setting(False, FLAG, "Γ ≡ 1 in the last period")
    stop_at_onset: bool = setting(
        False,
        FLAG,
        "end each run at its first instability (later records NaN; runs without one go to --steps)",
    )
    onset_matvecs: int = setting(40, integer(2), "Lanczos steps for λ1, λ2 at the onset step")
    detector: str = setting(
        DEFAULT_DETECTOR,
        DETECTOR,
        "the first-instability rule, NAME or NAME:KEY=VALUE,...: " + " ".join(DETECTORS),
    )
    watch: tuple[str, ...] = setting(
        (),
        DETECTOR,
        "further instability rules watched in the same runs, each with its own onset and λ "
        "(with --stop-at-onset a run goes on until all fired or --watch-steps after its own)",
    )
    watch_steps: int = setting(
        0, integer(0), "with --watch: steps a stopped-at-onset run goes on after its onset"
    )
    optimizer: str = setting(
        "gd",
        choice(HYPERPARAMS),
        "optimiser (optax): " + " ".join(HYPERPARAMS) + "; λ is of P^-1 H for adam and rmsprop",
    )
    batch_points: int = setting(
        0,
        integer(0, " (0 = full batch)"),
        "training points per step, drawn anew each step (λ stays the full-batch loss's)",
    )
    order_seed: int = setting(
        -1,
        integer(-1, " (-1 = classes in order 0, 1, ..., C-1)"),
        "seed of a random class order of Γ, one permutation per cycle of C periods",
    )
    density_every: int = setting(
        0, integer(0, " (0 = off)"), "spectral density (Lanczos quadrature) every k steps"
    )
    density_matvecs: int = setting(32, integer(2), "Lanczos steps per density probe")
    density_probes: int = setting(4, integer(1), "probe vectors per density measurement")
    trace_every: int = setting(0, integer(0, " (0 = off)"), "Hessian trace (Hutch++) every k steps")
    trace_samples: int = setting(30, integer(4), "Hessian-vector products per trace")
    layer_sharpness: bool = setting(
        False, FLAG, "λ1 of each weight and bias block at every --eig-every measurement"
    )
    layer_matvecs: int = setting(16, integer(1), "Lanczos steps per block for --layer-sharpness")
    ggn_ntk: bool = setting(
        False,
        FLAG,
        "at every --eig-every measurement: λ1, λ2 of the Gauss-Newton matrix J^T H_f J and of "
        "the NTK J J^T (output space), each by --num-matvecs cold Lanczos steps, and "
        "u1^T (H - G) u1 at the tracked u1 (ggn_lam, ntk_lam, functional_u1)",
    )
    class_records: bool = setting(
        False,
        FLAG,
        "at every record, per class: training and validation loss and accuracy and the norm of "
        "the class's gradient (class_loss, class_static_loss, class_acc, class_val_loss, "
        "class_val_acc, class_grad_norm)",
    )
    class_split: bool = setting(
        False,
        FLAG,
        "at every --eig-every measurement, for each tracked eigenvector u_k: its class split "
        "u_k^T H^(c) u_k (sums to λ_k), cos(u_k, g_c) with each class's gradient, and the "
        "emphasised class c(t) (class_split, class_cos, eig_class_grad_norm, emphasised)",
    )
    depth: int = setting(1, integer(1), "hidden layers")
    init: str = setting("glorot", choice(INITS), "initialisation: " + " or ".join(INITS))
    dtype: str = setting("float64", choice(DTYPES), "float64 or float32")


@dataclasses.dataclass(frozen=True)
class SweepConfig(ProgramSettings):
    """Every setting of a sweep: those of its programs (:class:`ProgramSettings`) and the grid,
    the run length, the optimiser's hyperparameters, the data and the chunks. Tuple fields are
    swept (Cartesian product with the seeds)."""

    loss: tuple[str, ...] = setting(("dce",), choice(LOSSES), "loss(es): " + " ".join(LOSSES))
    width: tuple[int, ...] = setting((100,), integer(1), "hidden units per layer")
    eta: tuple[float, ...] = setting((1.0,), real(0, strict=True), "learning rate(s) η")
    amplitude: tuple[float, ...] = setting(
        (70.0,), real(1, strict=False, note=" (1 = static loss)"), "amplitude A >= 1 of Γ"
    )
    period: tuple[int, ...] = setting((5000,), integer(1, " (steps)"), "period T of Γ in steps")
    seeds: int = setting(1, integer(1), "number of seeds (first-seed, first-seed + 1, ...)")
    first_seed: int = setting(0, SEED, "first network seed")
    steps: int = setting(10_000, integer(1), "GD steps of every run")
    steps_eta: float = setting(
        0.0,
        real(0, strict=False, note=" (0 = off)"),
        "a run of learning rate η stops after steps_eta/η steps (rounded up to a whole "
        "--eig-every, or --record-every, interval; at most --steps), so that runs of every η "
        "share one program; later records NaN",
    )
    watch_steps_eta: float = setting(
        0.0,
        real(0, strict=False, note=" (0 = off)"),
        "with --watch: a run's watch window is this/η steps (rounded up) instead of --watch-steps",
    )
    beta: float = setting(0.9, fraction(), "momentum β of momentum and nesterov")
    b1: float = setting(0.9, fraction(), "Adam β₁")
    b2: float = setting(0.999, fraction(), "Adam β₂")
    eps: float = setting(1e-8, real(0, strict=False), "ε of adam and rmsprop")
    decay: float = setting(0.9, fraction(), "RMSProp decay ρ")
    data: str = setting(
        "spiral",
        choice(DATASETS),
        "data set: " + " ".join(DATASETS) + ' (all but the spiral need pip install -e ".[data]")',
    )
    split_seed: int = setting(
        0,
        SEED,
        "seed of the stratified train/validation split (not the "
        "spiral, whose validation set is its own draw)",
    )
    points_per_class: int = setting(
        100, integer(2), "spiral points per class (train and validation)"
    )
    n_classes: int = setting(3, integer(2), "classes of the spiral")
    train_seed: int = setting(0, SEED, "seed of the training spiral")
    val_seed: int = setting(1, SEED, "seed of the validation spiral")
    chunk_steps: int = setting(
        5000,
        integer(1),
        "steps per chunk, the longest compiled piece; λ at an onset is measured at chunk ends "
        "(rounded to divide the run; checkpoints follow --checkpoint-every)",
    )

    def __post_init__(self):
        for f in fields():
            value = getattr(self, f.name)
            if _is_tuple(f) and not isinstance(value, tuple):
                if isinstance(value, (str, int, float, np.number)):
                    value = (value,)
                object.__setattr__(self, f.name, tuple(value))

    def validate(self, *, data: bool = True) -> SweepConfig:
        """Raises :class:`ConfigError` (a ``ValueError``) for the first invalid setting;
        ``data=False`` leaves out the data set's settings (for a task, whose data are its own)."""
        for f in fields():
            rule, value = f.metadata["rule"], getattr(self, f.name)
            values = value if _is_tuple(f) else (value,)
            if len(values) == 0 and f.name != "watch":
                raise ConfigError(f.name, [], "needs at least one value")
            for v in values:
                if not rule.ok(v):
                    allowed = rule.allowed
                    if f.name in ("data", "loss", "optimizer") and not isinstance(v, str):
                        allowed += (
                            f"; a {f.name} of your own (arrays, a function) goes in "
                            "dynloss_jax.Task, run by run_sweep(task, grid=...)"
                        )
                    raise ConfigError(f.name, _brief(v), allowed)
        for name in ("first_seed", "train_seed", "val_seed"):
            v = getattr(self, name)
            if not 0 <= v < SEED_LIMIT - self.seeds:
                raise ConfigError(name, v, f"must be an integer in [0, {SEED_LIMIT - self.seeds})")
        if self.steps % self.record_every:
            raise ConfigError(
                "record_every", self.record_every, f"must divide --steps ({self.steps})"
            )
        if self.eig_every:
            if self.eig_every % self.record_every:
                raise ConfigError(
                    "eig_every",
                    self.eig_every,
                    f"must be a multiple of --record-every ({self.record_every})",
                )
            if self.steps % self.eig_every:
                raise ConfigError(
                    "eig_every", self.eig_every, f"must divide --steps ({self.steps})"
                )
            if self.num_matvecs < N_TOP:
                raise ConfigError("num_matvecs", self.num_matvecs, f"must be an integer >= {N_TOP}")
        elif self.top_k:
            raise ConfigError("top_k", self.top_k, "needs --eig-every > 0")
        for name in ("density_every", "trace_every"):
            every = getattr(self, name)
            if not every:
                continue
            interval = self.eig_every or self.record_every
            if every % interval or self.steps % every:
                raise ConfigError(
                    name,
                    every,
                    f"must be a multiple of {interval} (--eig-every, or --record-every without "
                    f"it) that divides --steps ({self.steps})",
                )
            if self.stop_at_onset:
                raise ConfigError(name, every, "does not work with --stop-at-onset")
        if self.steps_eta and (self.density_every or self.trace_every):
            raise ConfigError(
                "steps_eta", self.steps_eta, "does not work with --density-every or --trace-every"
            )
        if self.density_every and self.trace_every:
            low, high = sorted((self.density_every, self.trace_every))
            if high % low:
                raise ConfigError(
                    "trace_every", self.trace_every, "and --density-every must divide one another"
                )
        for name in ("layer_sharpness", "ggn_ntk", "class_split"):  # measured with λ
            if getattr(self, name) and not self.eig_every:
                raise ConfigError(name, True, "needs --eig-every > 0")
        for name in ("ggn_ntk", "class_split"):  # of H itself
            if getattr(self, name) and self.optimizer in ADAPTIVE_NAMES:
                raise ConfigError(
                    name, True, f"measures H, but with {self.optimizer} λ is of P^-1/2 H P^-1/2"
                )
        if self.static_last_period:
            for t in self.period:
                if self.steps % t:
                    raise ConfigError(
                        "period",
                        t,
                        f"must divide --steps ({self.steps}) with "
                        "--static-last-period, so that the last period is a whole static one",
                    )
        try:
            check_dtype(self.dtype)
        except ValueError as e:
            raise ConfigError("dtype", self.dtype, str(e)) from None
        if self.detector is None and (self.watch or self.stop_at_onset):
            name = "watch" if self.watch else "stop_at_onset"
            raise ConfigError(name, getattr(self, name), "needs an onset rule (detector)")
        if not data:
            return self
        try:
            self.dataset()
        except MissingExtraError:
            raise ConfigError(
                "data", self.data, 'needs the optional extra: pip install -e ".[data]"'
            ) from None
        n_train = self.dataset().info["n_train"]
        if self.batch_points > n_train:
            raise ConfigError(
                "batch_points", self.batch_points, f"must be <= the {n_train} training points"
            )
        return self

    @property
    def opt_hp(self) -> dict[str, float]:
        """The hyperparameters of the chosen optimiser, by name."""
        return {k: getattr(self, k) for k in HYPERPARAMS[self.optimizer]}

    def describe_measurements(self) -> dict:
        """What the recorded λ are of and the edge-of-stability line they meet (for
        ``config.json`` and plots): ``lam_operator`` and ``threshold`` (label and one value per
        η)."""
        from dynloss_jax import optim

        adaptive = self.optimizer in optim.ADAPTIVE
        threshold = [
            float(optim.stability_threshold(self.optimizer, eta, **self.opt_hp)) for eta in self.eta
        ]
        out = {
            "lam_operator": "P^-1/2 H P^-1/2 (frozen preconditioner)" if adaptive else "H",
            "threshold": {
                "optimizer": self.optimizer,
                "label": optim.threshold_label(self.optimizer),
                "value": threshold,
            },
        }
        if self.top_k and self.eig_every:
            out["lam_method"] = (
                f"top {self.top_k} by block Krylov, {self.top_k_blocks} blocks warm-started "
                "from the last measurement"
            )
            out["above"] = [self.top_k_above / 2 * t for t in threshold]
        return out

    # --- what the engine and the results folder are built from ---------------------------

    @property
    def seed_values(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def grid(self) -> Grid:
        """The sweep's :class:`~dynloss_jax.grid.Grid`: the axes of :data:`GRID_AXES`."""
        axes = {a: tuple(getattr(self, a)) for a in GRID_AXES[:-1]}
        return Grid.of(
            {**axes, "width": tuple(int(w) for w in self.width), "seed": self.seed_values}
        )

    @property
    def coords(self) -> dict:
        """Values along each sweep axis, in the order of :data:`GRID_AXES`."""
        return self.grid().coords

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self.grid().shape

    def programs(self, pad_widths: bool = False) -> list[dict]:
        """The compiled programs of the sweep (:meth:`dynloss_jax.grid.Grid.programs`): one per
        (loss, width), or with ``pad_widths`` one per loss family (the losses sharing a static
        loss, CE or MSE)."""
        from dynloss_jax.losses import STATIC_OF

        return self.grid().programs(pad_widths, family=STATIC_OF.get)

    def program_runs(self, program: dict) -> dict[str, list]:
        """The swept values of every run of ``program`` (from :meth:`programs`), cell by cell,
        with each run's ``member`` and ``width_index`` in the program's tuples."""
        return self.grid().program_runs(program, self.runs())

    def spec(self, program: dict):
        """The :class:`~dynloss_jax.spec.RunSpec` of ``program`` (from :meth:`programs`)."""
        from dynloss_jax.spec import RunSpec

        return RunSpec.from_config(self, **program)

    def runs(self) -> dict[str, list]:
        """The swept values of every run of a group, by name (η × A × T × seed product), with
        each run's step limit (``max_steps``) with ``steps_eta`` and its watch window
        (``watch_steps``) with ``watch_steps_eta``."""
        return self.run_limits(self.grid().runs())

    def hyper_args(self, program: dict) -> dict:
        """The arguments of :func:`~dynloss_jax.spec.make_hyper` for ``program``'s runs."""
        return dict(self.program_runs(program), opt_hp=self.opt_hp)

    def run_limits(self, out: dict) -> dict:
        """``out`` (per-run values with ``eta``) with each run's step limit (``max_steps``) with
        ``steps_eta`` and its watch window (``watch_steps``) with ``watch_steps_eta``."""
        if self.steps_eta:
            out["max_steps"] = [self.run_steps(eta) for eta in out["eta"]]
        if self.watch_steps_eta and self.watch:
            out["watch_steps"] = [steps_for(eta, self.watch_steps_eta) for eta in out["eta"]]
        return out

    def run_steps(self, eta: float) -> int:
        """The steps of a run at learning rate ``eta``: :func:`steps_for` ``steps_eta`` at
        the measurement interval, at most ``steps``; ``steps`` when ``steps_eta`` is 0."""
        if not self.steps_eta:
            return self.steps
        return min(self.steps, steps_for(eta, self.steps_eta, self.eig_every or self.record_every))

    def dataset(self):
        """The :class:`~dynloss_jax.data.Dataset` of these settings (NumPy, with ``info``)."""
        from dynloss_jax.data import load_dataset

        return load_dataset(
            self.data,
            points_per_class=self.points_per_class,
            n_classes=self.n_classes,
            train_seed=self.train_seed,
            val_seed=self.val_seed,
            split_seed=self.split_seed,
        )

    def arrays(self) -> Data:
        """The training and validation sets as :class:`~dynloss_jax.data.Data`."""
        d = self.dataset()
        return make_data(d.x_train, d.y_train, d.x_val, d.y_val, dtype=self.dtype)

    @property
    def chunk(self) -> int:
        """Steps per chunk: a multiple of the measurement interval that divides ``steps``."""
        interval = max(self.eig_every or self.record_every, self.density_every, self.trace_every)
        n_intervals = self.steps // interval
        best = 1
        for d in range(1, n_intervals + 1):
            if n_intervals % d == 0 and d * interval <= max(self.chunk_steps, interval):
                best = d
        return best * interval

    def settings(self) -> dict:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields()
        }

    @classmethod
    def from_settings(cls, settings: dict) -> SweepConfig:
        return cls(**{k: v for k, v in settings.items() if k in _NAMES})


def normalised(settings: dict | None) -> dict | None:
    """Stored ``settings`` with every setting added since filled in at its default (which
    changes no run), so that a folder written before a setting existed compares equal to the
    same sweep now; ``settings`` as they are when they do not form a config."""
    if isinstance(settings, dict) and "task" in settings:  # a task sweep's: stored whole
        return settings
    try:
        return SweepConfig.from_settings(settings).settings()
    except (TypeError, ValueError, AttributeError):
        return settings


def _brief(value):
    """A value as an error shows it: an array by its shape."""
    shape = getattr(value, "shape", None)
    return f"<array {shape}>" if shape is not None else value


def fields() -> tuple[dataclasses.Field, ...]:
    """The settings of :class:`SweepConfig` with ``metadata`` rule/help/cli, in the order of the
    flags and of ``config.json``: its own first (the grid comes first), then
    :class:`ProgramSettings`."""
    inherited = len(dataclasses.fields(ProgramSettings))
    own = dataclasses.fields(SweepConfig)
    return own[inherited:] + own[:inherited]


def _is_tuple(f: dataclasses.Field) -> bool:
    return str(f.type).startswith("tuple")


_NAMES = frozenset(f.name for f in fields())
