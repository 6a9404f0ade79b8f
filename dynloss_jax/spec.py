"""What a compiled program is given: the static :class:`RunSpec` of a group of runs, the swept
:class:`Hyper` values of each run, and the static tables of a padded program.

A :class:`RunSpec` is the settings of :class:`~dynloss_jax.config.ProgramSettings` (declared
once there, with their defaults; a sweep's comes from :meth:`RunSpec.from_config`) and the
group's loss, width, length and data shape. Changing any of it recompiles; everything a sweep
varies within a program is a :class:`Hyper` array.

**Padding.** A :class:`RunSpec` whose ``width`` is a tuple pads every run's network to the
largest width; the real width of a run is ``Hyper.width_index``. :func:`padding_tables` says
where each width's real parameters sit in the padded vector; :func:`real_mask` and
:func:`embed` read them for one run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynloss_jax import instability, optim
from dynloss_jax.config import N_TOP, ProgramSettings, SweepConfig
from dynloss_jax.losses import STATIC_OF, get_loss
from dynloss_jax.model import FlatModel, embedding, flat_model
from dynloss_jax.schedule import paper_schedule

# Random streams derived from a run's seed besides the initialisation's: fold_in tags, kept
# together so that they stay distinct.
BATCH_STREAM = 0x6261  # mini-batches
SPECTRUM_STREAM = 0x7370  # probes of the density and trace


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec(ProgramSettings):
    """Everything static about a group of runs: changing any field recompiles.

    Besides the settings of :class:`~dynloss_jax.config.ProgramSettings`: ``loss`` and
    ``width``, which may be tuples (the losses of one family and the widths of one padded
    program, each run choosing its own through ``Hyper.member`` and ``Hyper.width_index``), the
    run length ``n_steps``, and the shape of the data, ``n_classes`` and ``n_inputs``.

    A task's own pieces (:class:`~dynloss_jax.task.Task`) enter here: ``loss`` may be functions
    as well as the paper's names, ``schedule`` a schedule function (``None``: the paper's, from
    ``waveform``, ``static_last_period`` and ``order_seed``), ``network`` a
    :class:`~dynloss_jax.model.FlatModel` (``None``: the built-in MLP of ``width``; with a
    network ``width`` is ``None``), ``optimizer`` a function ``(eta, **hp)`` with its
    ``threshold`` (or ``None``: unknown). Functions are compared by identity, so a function
    redefined in the same process makes a new spec, and a new program.
    """

    loss: str | Callable | tuple
    width: int | tuple[int, ...] | None
    n_steps: int
    n_classes: int = 3
    n_inputs: int = 2  # features of the data
    schedule: Callable | None = None
    network: FlatModel | None = None
    threshold: Callable | None = None

    def __post_init__(self):
        names = [loss for loss in self.losses if isinstance(loss, str)]
        for name in names:
            get_loss(name)  # ValueError for an unknown name
        if not self.losses or not all(isinstance(n, str) or callable(n) for n in self.losses):
            raise ValueError(f"loss must be names or functions, got {self.loss!r}")
        if len(names) == len(self.losses) and len({STATIC_OF[n] for n in names}) != 1:
            raise ValueError(f"losses of one program must share a static loss, got {self.loss!r}")
        if self.network is not None:
            if self.width is not None:
                raise ValueError(f"width must be None with a network of its own, got {self.width}")
        elif not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be >= 1, got {self.width!r}")
        positive = ("n_steps", "n_classes", "depth", "record_every", "num_matvecs", "top_k_blocks")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eig_every < 0 or self.eig_every % self.record_every:
            raise ValueError(
                f"eig_every must be 0 or a multiple of record_every "
                f"({self.record_every}), got {self.eig_every}"
            )
        if isinstance(self.optimizer, str):
            optim.hyperparams(self.optimizer)  # ValueError for an unknown name
        elif not callable(self.optimizer):
            raise ValueError(f"optimizer must be a name or a function, got {self.optimizer!r}")
        if self.batch_points < 0:
            raise ValueError(f"batch_points must be >= 0, got {self.batch_points}")
        every = [e for e, _ in self.levels]
        for outer, inner in zip(every, [*every[1:], self.interval], strict=False):
            if outer % inner:
                raise ValueError(
                    f"density_every and trace_every must be multiples of each other and of "
                    f"{self.interval} (eig_every, or record_every without it), got "
                    f"{self.density_every}, {self.trace_every}"
                )
        for rule in self.rules:
            instability.get_detector(rule)  # ValueError for an unknown rule
        if self.detector is None and (self.watch or self.stop_at_onset):
            raise ValueError("watch and stop_at_onset need the onset rule (detector) on")
        if self.watch_steps < 0:
            raise ValueError(f"watch_steps must be >= 0, got {self.watch_steps}")
        if self.levels and self.stop_at_onset:
            raise ValueError("density_every and trace_every do not work with stop_at_onset")
        if self.top_k < 0 or (self.top_k and not self.eig_every):
            raise ValueError(f"top_k must be 0, or >= 1 with eig_every > 0, got {self.top_k}")
        if self.layer_sharpness and not self.eig_every:
            raise ValueError("layer_sharpness is measured with λ1: it needs eig_every > 0")
        if self.ggn_ntk and (not self.eig_every or self.adaptive):
            raise ValueError(
                "ggn_ntk is measured beside λ of H: it needs eig_every > 0 and an optimiser "
                "whose λ is of H (not adam or rmsprop)"
            )
        if self.class_split and not self.eig_every:
            raise ValueError("class_split is measured with λ1: it needs eig_every > 0")
        if self.class_split and self.adaptive:
            raise ValueError(
                f"class_split splits the Hessian H, but with {self.optimizer} the tracked λ are "
                "of P^-1/2 H P^-1/2"
            )
        if self.n_steps % self.block:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of {self.block}")

    @classmethod
    def from_config(cls, config: SweepConfig, *, loss, width, cells=None) -> RunSpec:
        """The spec of one (loss, width) group of a sweep, or of a padded program (tuples;
        ``cells`` is accepted so that a program of :meth:`SweepConfig.programs` can be passed
        as is), with the data's shape from ``config.dataset()``."""
        data = config.dataset()
        settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(ProgramSettings)}
        return cls(
            loss=loss,
            width=width,
            n_steps=config.steps,
            n_classes=data.y_train.shape[1],
            n_inputs=data.x_train.shape[1],
            **settings,
        )

    @property
    def interval(self) -> int:
        return self.eig_every or self.record_every

    @property
    def n_tracked(self) -> int:
        """Eigenvalues tracked every ``eig_every`` steps: ``top_k``, or λ1, λ2 by Lanczos."""
        return self.top_k or N_TOP

    @property
    def rules(self) -> tuple[str, ...]:
        """The onset rule and the watched ones; none when ``detector`` is ``None`` (then no
        onset, parameter history or onset Lanczos is compiled)."""
        return () if self.detector is None else (self.detector, *self.watch)

    @property
    def detectors(self) -> tuple[instability.Detector, ...]:
        """The run's onset rule, then the watched ones (empty without an onset rule)."""
        return tuple(instability.get_detector(r) for r in self.rules)

    @property
    def history(self) -> int:
        """Parameter vectors kept (the current one and the steps back to the earliest onset a
        rule can confirm), so that λ can be measured at the onset step itself; 0 without
        rules."""
        return max(d.lag for d in self.detectors) + 1 if self.detectors else 0

    @property
    def levels(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The spectrum measurements above the λ interval, outermost first: ``(every, kinds)``,
        kinds ``"trace"`` and/or ``"density"``; each ``every`` divides the one before."""
        kinds: dict[int, list[str]] = {}
        for kind, every in (("trace", self.trace_every), ("density", self.density_every)):
            if every:
                kinds.setdefault(int(every), []).append(kind)
        return tuple((e, tuple(k)) for e, k in sorted(kinds.items(), reverse=True))

    @property
    def block(self) -> int:
        """Steps of the outermost measurement level: chunks are multiples of it."""
        return self.levels[0][0] if self.levels else self.interval

    @property
    def adaptive(self) -> bool:
        """Whether λ is measured on the preconditioned Hessian P^{-1/2} H P^{-1/2} (the named
        adam and rmsprop; a function optimiser's λ is of H)."""
        return isinstance(self.optimizer, str) and self.optimizer in optim.ADAPTIVE

    @property
    def losses(self) -> tuple[str, ...]:
        return self.loss if isinstance(self.loss, tuple) else (self.loss,)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.width if isinstance(self.width, tuple) else (self.width,)

    @property
    def padded(self) -> bool:
        return isinstance(self.width, tuple)

    @property
    def loss_fns(self) -> tuple[Callable, ...]:
        """The members' loss functions (the paper's names resolved)."""
        return tuple(get_loss(n) if isinstance(n, str) else n for n in self.losses)

    @property
    def static_fns(self) -> tuple[Callable, ...]:
        """Each member's static loss: for the paper's losses the named static one (CE, MSE; equal
        to the loss at Γ ≡ 1), for a function the function itself, called at Γ ≡ 1."""
        return tuple(get_loss(STATIC_OF[n]) if isinstance(n, str) else n for n in self.losses)

    @property
    def gamma_fn(self) -> Callable:
        """The schedule ``(step, n_classes, **hp) -> Γ_C`` every run of the program follows."""
        if self.schedule is not None:
            return self.schedule
        return paper_schedule(
            self.waveform,
            n_steps=self.n_steps if self.static_last_period else None,
            order_seed=None if self.order_seed < 0 else self.order_seed,
        )

    @property
    def model_args(self) -> dict:
        return dict(
            n_classes=self.n_classes,
            depth=self.depth,
            init=self.init,
            dtype=self.dtype,
            n_inputs=self.n_inputs,
        )

    @property
    def model(self) -> FlatModel:
        """The network every run of the program evaluates (the largest width when padded)."""
        if self.network is not None:
            return self.network
        return flat_model(max(self.widths), **self.model_args)

    def positions(self, width_index: int) -> np.ndarray:
        """Where the real parameters of run width ``widths[width_index]`` sit in ``w_N``."""
        return embedding(self.widths[width_index], max(self.widths), **self.model_args)


class Hyper(NamedTuple):
    """Swept values of one run (or of R runs, each with a leading axis R). ``amplitude``,
    ``period`` and the entries of ``hp`` are the named per-run values that the schedule, the
    loss and the optimiser take by keyword (:func:`dynloss_jax.objective.named_values`);
    ``amplitude`` and ``period`` are ``None`` for a task whose functions take neither."""

    eta: jax.Array
    amplitude: jax.Array | None
    period: jax.Array | None  # integer
    seed: jax.Array  # integer
    member: jax.Array = 0  # integer: which of ``RunSpec.losses``
    width_index: jax.Array = 0  # integer: which of ``RunSpec.widths``
    opt_hp: dict | None = None  # the optimiser's hyperparameters by name (None: defaults)
    # integer: the run's own step limit, below the program's length (None: no limits; the run
    # then stops, as at an onset, when it reaches it — see engine._finished)
    max_steps: jax.Array | None = None
    # integer: the run's own watch window (None: RunSpec.watch_steps for every run)
    watch_steps: jax.Array | None = None
    hp: dict | None = None  # further named per-run values (a task's grid axes), by name


def make_hyper(
    *,
    eta,
    seed,
    amplitude=None,
    period=None,
    member=None,
    width_index=None,
    opt_hp=None,
    max_steps=None,
    watch_steps=None,
    hp=None,
    dtype="float64",
) -> Hyper:
    """Per-run values (1-D, equal length R), by name, as a :class:`Hyper` of NumPy arrays;
    ``member`` and ``width_index`` (for tuple losses and widths of :class:`RunSpec`) default to 0.
    ``opt_hp`` maps optimiser hyperparameter names (``beta``, ``b1``, …) to a value per run or
    one shared value (broadcast). ``max_steps`` and ``watch_steps`` (a step limit and a watch
    window per run) stay ``None`` unless given, and so do ``amplitude`` and ``period``. ``hp``
    maps further names to a value per run: integer values stay integers (int32), others take
    ``dtype``.

    Values are not validated here: :meth:`dynloss_jax.SweepConfig.validate` does that once.
    """
    arrays = Hyper(
        eta=np.asarray(eta, dtype=dtype),
        amplitude=None if amplitude is None else np.asarray(amplitude, dtype=dtype),
        period=None if period is None else np.asarray(period, dtype=np.int32),
        seed=np.asarray(seed, dtype=np.int32),
        member=np.zeros(np.shape(seed), np.int32)
        if member is None
        else np.asarray(member, np.int32),
        width_index=(
            np.zeros(np.shape(seed), np.int32)
            if width_index is None
            else np.asarray(width_index, np.int32)
        ),
    )
    for name, value in (("max_steps", max_steps), ("watch_steps", watch_steps)):
        if value is not None:
            arrays = arrays._replace(**{name: np.asarray(value, np.int32)})
    if hp:
        arrays = arrays._replace(hp={k: _per_run(v, dtype) for k, v in hp.items()})
    extra = list((arrays.hp or {}).values())
    shapes = [
        a.shape
        for a in (*arrays[:6], arrays.max_steps, arrays.watch_steps, *extra)
        if a is not None
    ]
    if len(set(shapes)) != 1 or arrays.eta.ndim != 1:
        raise ValueError(f"per-run values must be 1-D of one length, got shapes {shapes}")
    if opt_hp:
        arrays = arrays._replace(
            opt_hp={
                k: np.array(np.broadcast_to(np.asarray(v, dtype), arrays.eta.shape))
                for k, v in opt_hp.items()
            }
        )
    return arrays


def _per_run(values, dtype):
    a = np.asarray(values)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"per-run values must be numbers, got {values!r}")
    return a.astype(np.int32) if np.issubdtype(a.dtype, np.integer) else a.astype(dtype)


@functools.cache
def padding_tables(spec: RunSpec):
    """Static tables of a padded program, one row per width: the real parameters' mask and
    their positions in unpadded order (−1 after them)."""
    n = spec.model.n_params
    mask_WxN = np.zeros((len(spec.widths), n), bool)
    coords_WxN = np.full((len(spec.widths), n), -1, np.int32)
    for i in range(len(spec.widths)):
        pos = spec.positions(i)
        mask_WxN[i, pos] = True
        coords_WxN[i, : pos.size] = pos
    return mask_WxN, coords_WxN


def real_mask(spec: RunSpec, hyper: Hyper):
    """The run's real-parameter mask (``None`` unpadded) in the parameters' dtype."""
    if not spec.padded:
        return None
    mask_WxN, _ = padding_tables(spec)
    return jnp.asarray(mask_WxN, spec.dtype)[hyper.width_index]


def embed(spec: RunSpec, hyper: Hyper, real_vector):
    """``real_vector(i)`` (a vector of the unpadded network of width ``widths[i]``) for every
    width of the program, placed in the padded vector; the run's own one is returned."""
    n = spec.model.n_params
    padded = [
        jnp.zeros((n,), spec.dtype).at[spec.positions(i)].set(real_vector(i))
        for i in range(len(spec.widths))
    ]
    return jnp.stack(padded)[hyper.width_index]
