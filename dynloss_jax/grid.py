"""The grid of a sweep and its plan: which compiled programs run which runs.

A :class:`Grid` is an ordered set of named axes, each a tuple of values; the sweep is their
Cartesian product. ``loss`` and ``width`` (when present) are *program* axes: they change what is
compiled, so each of their cells is a program of its own — or, with ``pad_widths``, every width
and every loss of one family share one padded program. Every other axis (``eta``, ``seed``, the
paper's ``amplitude`` and ``period``, a task's own names) is a per-run value of a program. The
grid's axes are the leading axes of every results array, in this order: program axes first, then
the run axes, ``seed`` last.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

PROGRAM_AXES = ("loss", "width")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Named axes (``names[i]`` takes ``values[i]``), program axes first and ``seed`` last; make
    one with :meth:`of`."""

    names: tuple[str, ...]
    values: tuple[tuple, ...]

    @classmethod
    def of(cls, axes: dict) -> Grid:
        """The grid of ``axes`` (name → one value or a sequence of values), reordered: program
        axes first, then the others in their given order, ``seed`` last. Raises ``ValueError``
        for an axis without values or without a seed axis."""
        if "seed" not in axes:
            raise ValueError("the grid needs a seed axis (e.g. seed=range(3))")
        ordered = [n for n in PROGRAM_AXES if n in axes]
        ordered += [n for n in axes if n not in PROGRAM_AXES and n != "seed"] + ["seed"]
        values = []
        for name in ordered:
            v = axes[name]
            v = (v,) if isinstance(v, (str, int, float)) or callable(v) else tuple(v)
            if not v:
                raise ValueError(f"grid axis {name!r} has no values")
            values.append(v)
        return cls(tuple(ordered), tuple(values))

    @property
    def axes(self) -> dict:
        return dict(zip(self.names, self.values, strict=True))

    @property
    def coords(self) -> dict:
        """Values along each axis, JSON-ready (a function by its name)."""
        return {n: [_label(v) for v in vals] for n, vals in self.axes.items()}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def program_axes(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n in PROGRAM_AXES)

    @property
    def run_axes(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in PROGRAM_AXES)

    def programs(
        self, pad_widths: bool = False, family: Callable = lambda loss: loss, defaults=None
    ) -> list[dict]:
        """The compiled programs: ``{loss, width, cells}``, ``cells`` the grid cells (tuples of
        indices along the program axes) the program runs, in its run order. Unpadded: one per
        (loss, width) cell. With ``pad_widths``: one per loss ``family`` (losses with the same
        ``family(loss)``), over every width; ``loss`` and ``width`` are then tuples when there
        are several. An absent program axis takes its value from ``defaults``."""
        defaults = defaults or {}
        axes = self.axes
        losses = axes.get("loss", (defaults.get("loss"),))
        widths = axes.get("width", (defaults.get("width"),))

        def cell(li, wi):
            return tuple(
                i for name, i in (("loss", li), ("width", wi)) if name in self.program_axes
            )

        if not pad_widths:
            return [
                dict(loss=loss, width=width, cells=[cell(li, wi)])
                for li, loss in enumerate(losses)
                for wi, width in enumerate(widths)
            ]
        families: dict = {}
        for li, loss in enumerate(losses):
            families.setdefault(family(loss), []).append(li)
        programs = []
        for members in families.values():
            member_losses = tuple(losses[li] for li in members)
            programs.append(
                dict(
                    loss=member_losses if len(member_losses) > 1 else member_losses[0],
                    width=widths if len(widths) > 1 else widths[0],
                    cells=[cell(li, wi) for li in members for wi in range(len(widths))],
                )
            )
        return programs

    def runs(self) -> dict[str, list]:
        """The per-run values of one program cell, by name: the product of the run axes."""
        names = self.run_axes
        product = list(itertools.product(*(self.axes[n] for n in names)))
        return {name: [p[i] for p in product] for i, name in enumerate(names)}

    def program_runs(self, program: dict, runs: dict | None = None) -> dict[str, list]:
        """The per-run values of every run of ``program`` (from :meth:`programs`), cell by
        cell, with each run's ``member`` and ``width_index`` in the program's tuples; ``runs``
        (default :meth:`runs`) may carry further per-run entries."""
        runs = self.runs() if runs is None else runs
        n = len(runs["seed"])
        cells = program["cells"]
        li_of = {
            c: (c[self.program_axes.index("loss")] if "loss" in self.program_axes else 0)
            for c in cells
        }
        wi_of = {
            c: (c[self.program_axes.index("width")] if "width" in self.program_axes else 0)
            for c in cells
        }
        members = {li: m for m, li in enumerate(dict.fromkeys(li_of[c] for c in cells))}
        out = {k: v * len(cells) for k, v in runs.items()}
        out["member"] = [members[li_of[c]] for c in cells for _ in range(n)]
        out["width_index"] = [wi_of[c] for c in cells for _ in range(n)]
        return out


def steps_for(eta: float, steps_eta: float, interval: int = 1) -> int:
    """``steps_eta``/η steps rounded up to a whole number of ``interval`` steps, ignoring
    rounding noise (100 000/0.05 is 2 000 000, not one more interval)."""
    return interval * math.ceil(round(steps_eta / eta / interval, 9))


def _label(value):
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return value
