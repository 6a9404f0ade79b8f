"""The progress bar: what it draws on a terminal (fake clock), silence elsewhere, chunk reports."""

import io
import re

import pytest

from dynloss_jax import SweepConfig, run_sweep
from dynloss_jax.progress import ProgressBar, format_duration


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


LINE = re.compile(
    r"\r(\w*) ?\[([#-]+)\] +(\d+)%  ([\d,]+)/([\d,]+) run-steps  (\S+) run-steps/s"
    r"  ETA (\S+) "
)


def draws(stream):
    return [LINE.match("\r" + part) for part in stream.getvalue().split("\r")[1:]]


def test_line_shows_steps_done_rate_and_time_left():
    stream, clock = FakeTTY(), FakeClock()
    bar = ProgressBar("train", stream=stream, width=10, clock=clock)
    clock.t += 8.0  # compilation and the first chunk
    bar(2_000, 20_000)
    clock.t += 2.5  # the next chunk: 4 000 run-steps in 2.5 s
    bar(6_000, 20_000)
    clock.t += 5.0
    bar(14_000, 20_000)
    first, second, third = draws(stream)
    assert first.groups() == (
        "train",
        "#" + 9 * "-",
        "10",
        "2,000",
        "20,000",
        f"{2000 / 8:.3g}",
        format_duration(18_000 / (2000 / 8)),
    )
    # from the second report on, the rate leaves out the time before the first one
    assert second.groups() == (
        "train",
        "###" + 7 * "-",
        "30",
        "6,000",
        "20,000",
        f"{4000 / 2.5:.3g}",
        format_duration(14_000 / 1600),
    )
    rate = 12_000 / 7.5
    assert third.group(2) == "#######---" and third.group(6) == f"{rate:.3g}"
    assert third.group(7) == format_duration(6_000 / rate) == "0:04"
    assert "\n" not in stream.getvalue()


def test_last_report_ends_the_line_with_the_total_time():
    stream, clock = FakeTTY(), FakeClock()
    bar = ProgressBar(stream=stream, clock=clock)
    clock.t += 3.0
    bar(5, 10)
    clock.t += 62.0
    bar(10, 10)
    assert stream.getvalue().endswith("(done in 1:05)\n")
    assert draws(stream)[-1].group(3) == "100"


@pytest.mark.parametrize(
    "quiet, stream",
    [(True, FakeTTY()), (False, io.StringIO()), (True, io.StringIO()), (False, object())],
)
def test_silent_when_quiet_or_not_a_terminal(quiet, stream):
    bar = ProgressBar("x", quiet=quiet, stream=stream)
    bar(1, 2)
    bar(2, 2)
    assert not bar.enabled
    if isinstance(stream, io.StringIO):
        assert stream.getvalue() == ""


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0:00"),
        (59.4, "0:59"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (7384, "2:03:04"),
        (float("nan"), "?"),
        (float("inf"), "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_sweep_reports_once_per_chunk():
    stream = FakeTTY()
    calls = []
    bar = ProgressBar("sweep", stream=stream)

    def progress(done, total):
        calls.append((done, total))
        bar(done, total)

    # 3 runs, 40 steps in chunks of 10: counts of run-steps after each chunk
    config = SweepConfig(
        loss=("ce",),
        width=(2,),
        eta=(0.5,),
        amplitude=(1.0, 4.0, 9.0),
        period=(20,),
        seeds=1,
        steps=40,
        record_every=5,
        chunk_steps=10,
        points_per_class=4,
    )
    run_sweep(config, progress=progress)
    assert calls == [(30, 120), (60, 120), (90, 120), (120, 120)]
    lines = draws(stream)
    assert len(lines) == 4 and all(lines)
    assert [m.group(4) for m in lines] == [f"{d:,}" for d, _ in calls]
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_unknown_rate_shows_a_question_mark():
    stream, clock = FakeTTY(), FakeClock()
    bar = ProgressBar("x", stream=stream, clock=clock)
    bar(0, 100)  # a report before any step and before any time passed
    clock.t += 4.0
    bar(50, 100)
    first, second = draws(stream)
    assert first.group(6) == "?" and first.group(7) == "?"
    assert second.group(6) == f"{50 / 4:.3g}" and second.group(7) == "0:04"


def test_the_sweep_reports_its_compile_time_and_the_line_shows_it():
    stream = FakeTTY()
    bar = ProgressBar("sweep", stream=stream)
    config = SweepConfig(
        loss=("ce",),
        width=(3,),
        eta=(0.5,),
        amplitude=(1.0,),
        period=(20,),
        steps=20,
        record_every=5,
        chunk_steps=10,
        points_per_class=4,
        depth=3,
    )
    run = run_sweep(config, progress=bar)  # depth 3: a program no other test compiles
    assert bar.compile_s > 0
    assert run.config["programs"] == 1 and run.config["compile_s"][0] > 0
    assert f"compile {bar.compile_s:.1f} s" in stream.getvalue()


def test_in_a_notebook_the_bar_is_a_tqdm_widget(monkeypatch):
    """stderr of a Jupyter kernel is no terminal; the bar then goes through tqdm.auto."""
    import dynloss_jax.progress as progress

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    sink = io.StringIO()  # not a TTY
    bar = ProgressBar("nb", stream=sink)
    assert not bar.enabled and bar.widget is not None
    bar.widget.fp = sink  # tqdm.auto outside a kernel is the text bar; keep it off stderr
    bar(30, 120)
    assert bar.widget.n == 30 and bar.widget.total == 120
    bar.compiled(2.5)
    bar(120, 120)
    assert bar.widget.n == 120
    assert ProgressBar("nb", stream=sink, quiet=True).widget is None
