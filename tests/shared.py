"""What several test modules share: one tiny sweep (as settings and as CLI flags) and the
``dynloss`` command run in this process."""

import contextlib

import jax

from dynloss_jax.cli import main

# DMSE1, A = 5, T = 10, 40 steps in chunks of 20, 4 points per class: the smallest sweep that
# still has several chunks, records and a moving Γ.
SMALL = dict(
    loss=("dmse1",),
    amplitude=(5.0,),
    period=(10,),
    steps=40,
    record_every=2,
    chunk_steps=20,
    points_per_class=4,
)
# The same as flags, with two widths, two η and two seeds.
TINY = (
    "--loss dmse1 --width 3 5 --eta 0.1 0.3 --amplitude 5 --period 10 --seeds 2 --steps 40 "
    "--record-every 2 --chunk-steps 20 --points-per-class 4 --quiet"
).split()


def dynloss(capsys, *args):
    """Runs ``dynloss ARGS`` here; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse exits
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def count_compiles():
    """Collects the backend compilations that happen inside the block."""
    events = []

    def listener(event, duration, **kw):
        if "backend_compile" in event:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
