"""A one-line progress bar for long runs: run-steps done, run-steps/s, time left.

A sweep of R runs of S steps has R·S run-steps; :func:`~dynloss_jax.sweep.run_sweep` reports
``(done, total)`` run-steps after each chunk, and the bar redraws its line::

    train [####-----------]  30%  12,000/40,000 run-steps  2.1e+03 run-steps/s  ETA 0:13

From the second report on, the rate is measured since the first one, so it leaves out
compilation (which happens before the first chunk finishes); the first report can only divide by
the time since the bar was made (compilation included; a resumed sweep's earlier steps too). The
time left is (total − done) / rate. Once the sweep reports its compilation time
(``bar.compiled(seconds)``) the line shows it too. The bar writes to a terminal; in a Jupyter
notebook it is a live ``tqdm.auto`` widget instead; elsewhere (logs, CI, a pipe) and with
``quiet=True`` it is silent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above, ``?`` when unknown (NaN or infinite)."""
    if not seconds == seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a terminal but a bar can be shown)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar:
    """A callable ``bar(done, total)`` (counts of run-steps) drawing one updating line.

    Args:
      label: printed before the bar.
      quiet: draw nothing.
      stream: where to draw (default ``sys.stderr``); nothing is drawn unless
        ``stream.isatty()``.
      width: characters of the bar.
      clock: a function returning seconds (default ``time.perf_counter``).
    """

    def __init__(
        self,
        label: str = "",
        *,
        quiet: bool = False,
        stream=None,
        width: int = 30,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not quiet and callable(isatty) and bool(isatty())
        self.label, self.width, self.clock = label, width, clock
        self.start = clock()
        self.first = None  # (time, done) of the first report: rates leave out compilation
        self.compile_s = 0.0
        self.widget = None
        if not quiet and not self.enabled and in_notebook():
            from tqdm.auto import tqdm

            self.widget = tqdm(total=None, desc=label or None, unit=" run-steps", unit_scale=True)

    def compiled(self, seconds: float) -> None:
        """Told by the sweep how long compiling its programs has taken so far."""
        self.compile_s += seconds
        if self.widget is not None:
            self.widget.set_postfix_str(f"compiled in {self.compile_s:.1f} s")

    def rate(self, done: int, now: float) -> float:
        """Run-steps per second since the first report (since creation before a second one)."""
        t0, d0 = self.first
        if now > t0 and done > d0:
            return (done - d0) / (now - t0)
        return done / (now - self.start) if now > self.start else float("nan")

    def __call__(self, done: int, total: int) -> None:
        if self.widget is not None:
            self.widget.total = total
            self.widget.update(done - self.widget.n)
            if done >= total:
                self.widget.close()
            return
        if not self.enabled:
            return
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
        rate = self.rate(done, now)
        left = (total - done) / rate if rate > 0 else float("nan")
        fraction = min(done / total, 1.0) if total > 0 else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        label = f"{self.label} " if self.label else ""
        speed = f"{rate:.3g}" if rate == rate else "?"
        compile_note = f"  compile {self.compile_s:.1f} s" if self.compile_s else ""
        self.stream.write(
            f"\r{label}[{bar}] {100 * fraction:3.0f}%  {done:,}/{total:,} "
            f"run-steps  {speed} run-steps/s  ETA {format_duration(left)}"
            f"{compile_note} "
        )
        if done >= total:
            self.stream.write(f"(done in {format_duration(now - self.start)})\n")
        self.stream.flush()


def describe_status(path, config: dict, progress: dict | None, now: float) -> str:
    """What ``dynloss status`` prints for a results folder: from its ``config.json`` and, while
    unfinished, its ``progress.json`` (which the sweep rewrites at each checkpoint and every few
    seconds). The rate is run-steps per second of computing in the process that wrote it
    (compilation left out); the time left is the run-steps to go at that rate."""
    settings = config.get("settings") or {}
    if config.get("complete"):
        runs = 1
        for values in (config.get("axes") or {}).values():
            runs *= len(values)
        return (
            f"{path}: finished — {runs} runs of {settings.get('steps', 0):,} steps in "
            f"{format_duration(config.get('runtime_s', float('nan')))}"
        )
    if not progress:
        return f"{path}: unfinished — started, nothing saved yet"
    done, total = progress["run_steps_done"], progress["run_steps_total"]
    saved = progress["run_steps_saved"]
    rate = progress.get("rate")
    left = (total - done) / rate if rate else float("nan")
    where = f"step {progress['step']:,} of {progress['steps']:,}"
    if progress["programs"] > 1:
        where += f" of program {progress['program'] + 1} of {progress['programs']}"
    checkpoint = progress.get("checkpoint_at")
    ago = format_duration(now - progress["updated_at"])
    state = f"stopped by {progress['stopped_by']}" if progress.get("stopped_by") else "last update"
    lines = [
        f"{path}: unfinished — {state} {ago} ago",
        f"  runs: {progress['runs']:,}, at {where}",
        f"  done: {done:,} of {total:,} run-steps ({100 * done / total:.0f}%), "
        f"{f'{rate:.3g}' if rate else '?'} run-steps/s, about {format_duration(left)} left",
        "  last checkpoint: "
        + (
            f"{saved:,} run-steps, {format_duration(now - checkpoint)} ago"
            if checkpoint is not None
            else "none in this process yet"
            + (f" ({saved:,} run-steps saved before)" if saved else "")
        ),
    ]
    return "\n".join(lines)
