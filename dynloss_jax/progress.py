"""A one-line progress bar for long runs: steps done, run-steps/s, time left.

Writes to a terminal only: silent when ``quiet`` or when the stream is not a TTY (logs and CI
stay clean).
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Call with ``(done, total)`` run-steps; prints ``[####----] 45% 1.2e+04 steps/s ETA 0:31``."""

    def __init__(self, label: str = "", *, quiet: bool = False, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and getattr(self.stream, "isatty", lambda: False)()
        self.label, self.width = label, width
        self.start = time.perf_counter()
        self.first = None  # (time, done) at the first report: excludes compilation from rates

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
        t0, d0 = self.first
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else done / max(now - self.start, 1e-9)
        left = (total - done) / rate if rate > 0 else float("nan")
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        eta = "?" if left != left else f"{int(left // 60)}:{int(left % 60):02d}"
        self.stream.write(f"\r{self.label} [{bar}] {100 * done / max(total, 1):3.0f}% "
                          f"{rate:.3g} run-steps/s ETA {eta} ")
        if done >= total:
            self.stream.write(f"(total {now - self.start:.1f} s)\n")
        self.stream.flush()
