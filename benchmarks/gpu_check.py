"""One command that measures this project on an accelerator, time-boxed, into one JSON file.

    python -m benchmarks.gpu_check --out gpu_check.json            # full check (≈ 8 min, H200)
    python -m benchmarks.gpu_check --tiny --out check.json          # the same parts, tiny sizes
    python -m benchmarks.gpu_check --write-reference                # regenerate the CPU reference
    python -m benchmarks.gpu_check --parts fig4 flows --out f.json  # what is not yet measured

Parts, in the order they run (``--parts`` picks some):

``default``   the default benchmark (DCE, width 100, float64, 8 seeds × 5000 steps, λ1/λ2 every
              25 steps): the engine with and without Hessian tracking, and the authors' workflow
              on the same device (metrics fetched every step, and at the end: the asynchronous
              peer), as :mod:`benchmarks.throughput` measures them;
``reference`` the small reference sweep stored in ``docs/results/benchmarks/reference_sweep/``
              (computed on a CPU) run here: how far each array is from the CPU's, and a second
              run of it compared bit for bit with the first (determinism);
``fig3a``     Fig. 3a at full settings (50 seeds × 9 widths × CE/DCE, 35 000 steps);
``fig4``      Fig. 4 at full settings without its dense runs (one sweep per loss family, each
              run stopping at its onset or its own steps_eta/η limit; on an accelerator one
              program per family; the six watched onset rules beside the calibrated one);
``big``       the default workload with 1024 seeds (1000 steps): float64 with and without
              tracking, and float32 with tracking;
``fig4_f32``  Fig. 4 in float32, without the smallest η of each family (its longest runs), to
              fit a short lease;
``fig3a_f32`` Fig. 3a in float32.
``flows``     1024 central flows of the width-100 spiral network (the central-flow experiment's
              settings, DCE, one initial network per seed) vmapped in one program: GD, its
              midpoints, the stable and the central flow, 100 steps timed after compilation.

At the end the float32 parts are compared with the float64 ones (``f32_study``): per width the
difference of mean validation accuracies in units of their combined s.e.m.; per loss and η the
difference of mean η·λ1/2 at the onset in combined s.e.m., the slopes in their standard errors,
and how many runs had an onset.

Everything runs in one worker process (each program compiles once); the parent (which never
starts JAX) gives each part a time box (``BOX_S``, scaled by ``--budget``) and kills the worker
when a part overruns, records the part as ``timed_out`` with whatever it had finished, and starts
a new worker for the parts left. The JSON is rewritten after every finished piece, so an
interrupted check still leaves a file. On a CPU backend the check runs tiny sizes by default
(``--tiny``: width 16, a few steps, the experiments' smoke presets; what the test suite runs);
``--full`` forces the full sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "results" / "benchmarks" / "reference_sweep"
PARTS = ("default", "reference", "fig3a", "fig4", "big", "fig4_f32", "fig3a_f32", "flows")
# seconds per part on an H200 at full sizes, with room: the full check fits in about 8 minutes
BOX_S = {
    "default": 90,
    "reference": 60,
    "big": 120,
    "fig3a": 110,
    "fig3a_f32": 90,
    "fig4": 240,
    "fig4_f32": 200,
    "flows": 150,
}
BUDGET_S = 480.0

# the reference sweep: small (two compiled programs), a first instability in each of its 8 runs
REFERENCE_SETTINGS = dict(
    loss=("ce", "dce"),
    width=(16,),
    seeds=4,
    eta=(1.0,),
    amplitude=(20.0,),
    period=(200,),
    steps=2000,
    record_every=10,
    eig_every=20,
)


# ---------------------------------------------------------------------------------------------
# The worker: runs parts in order, appending one JSON line per event to a file


class Events:
    """Appends ``{"part", "kind", ...}`` lines to the events file, flushed at once."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the worker)

    def emit(self, part: str, kind: str, **fields) -> None:
        self.file.write(json.dumps({"part": part, "kind": kind, **fields}) + "\n")
        self.file.flush()


def _bench_workload(seeds, steps, repeats, **over) -> dict:
    w = dict(
        loss="dce",
        width=100,
        seeds=seeds,
        steps=steps,
        record_every=5,
        eig_every=25,
        num_matvecs=16,
        dtype="float64",
        depth=1,
        points_per_class=100,
        repeats=repeats,
        baseline_steps=500,
        baseline_seeds=1,
        batch_size=None,
        n_devices=0,
        host_devices=None,
    )
    return {**w, **over}


def _rate(r: dict) -> dict:
    """A throughput worker's result in seed-steps per second (median of the timed repeats)."""
    import statistics

    rates = [r["seed_steps"] / t for t in r["wall_s"]]
    return {
        "seed_steps_per_s": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": len(rates),
        "first_run_s": r["warmup_s"],
        "seed_steps": r["seed_steps"],
        "batch_size": r["batch_size"],
        "devices": r["devices"],
    }


def part_default(tiny: bool, emit) -> dict:
    from benchmarks.throughput import worker_baseline, worker_engine

    if tiny:
        w = _bench_workload(2, 100, 1, baseline_steps=20, width=16)
    else:
        w = _bench_workload(8, 5000, 2, baseline_steps=300)
    out = {"workload": {k: w[k] for k in ("loss", "width", "seeds", "steps", "eig_every")}}
    for name, kind, extra in (
        ("engine", worker_engine, {}),
        ("engine_no_tracking", worker_engine, {"eig_every": 0}),
        ("authors_workflow", worker_baseline, {"sync": True, "repeats": 1}),
        ("authors_workflow_async", worker_baseline, {"sync": False, "repeats": 1}),
    ):
        out[name] = _rate(kind({**w, **extra}))
        emit(name, out[name])
    engine = out["engine"]["seed_steps_per_s"]
    out["speedup_vs_authors"] = engine / out["authors_workflow"]["seed_steps_per_s"]
    out["speedup_vs_async_peer"] = engine / out["authors_workflow_async"]["seed_steps_per_s"]
    return out


def part_big(tiny: bool, emit) -> dict:
    from benchmarks.throughput import worker_engine

    w = _bench_workload(16, 100, 1, width=16) if tiny else _bench_workload(1024, 1000, 2)
    out = {"workload": {k: w[k] for k in ("loss", "width", "seeds", "steps", "eig_every")}}
    for name, extra in (
        ("f64", {}),
        ("f64_no_tracking", {"eig_every": 0}),
        ("f32", {"dtype": "float32"}),
    ):
        out[name] = _rate(worker_engine({**w, **extra}))
        emit(name, out[name])
    return out


def part_flows(tiny: bool, emit) -> dict:
    import jax

    from experiments import central_flow as experiment

    s = dict(experiment.SMOKE if tiny else experiment.FULL)
    runs, steps = (4, 20) if tiny else (1024, 100)
    t = time.perf_counter()
    program, W0 = experiment.many_flows(s, "dce", list(range(runs)), steps)
    jax.block_until_ready(program(W0))
    compile_and_first = time.perf_counter() - t
    t = time.perf_counter()
    records = jax.block_until_ready(program(W0))
    seconds = time.perf_counter() - t
    out = {
        "workload": {"loss": "dce", "width": s["width"], "runs": runs, "steps": steps, "k": s["k"]},
        "first_call_s": compile_and_first,
        "seconds": seconds,
        "flow_steps_per_s": runs * steps / seconds,
        "finite": bool(jax.numpy.isfinite(records.predicted).all()),
    }
    emit("flows", out)
    return out


def reference_config():
    from dynloss_jax.sweep import SweepConfig

    return SweepConfig(**REFERENCE_SETTINGS).validate()


def compare_arrays(new: dict, ref: dict) -> dict:
    """Per array of ``ref``: the largest absolute and relative difference (over entries finite
    in both), whether NaN sits in the same places, and whether the arrays are bit-identical."""
    import numpy as np

    out = {}
    for key, a in ref.items():
        b = new.get(key)
        if b is None or np.shape(a) != np.shape(b):
            out[key] = {"missing": True}
            continue
        a, b = np.asarray(a), np.asarray(b)
        entry = {"identical": bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))}
        if a.dtype.kind in "fc":
            fin = np.isfinite(a) & np.isfinite(b)
            diff = np.abs(a - b)[fin]
            scale = np.abs(a)[fin]
            entry["max_abs"] = float(diff.max()) if diff.size else 0.0
            entry["max_rel"] = float((diff / np.maximum(scale, 1e-300)).max()) if diff.size else 0.0
            entry["same_nan"] = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        else:
            entry["differ"] = int((a != b).sum())
        out[key] = entry
    return out


def part_reference(tiny: bool, emit) -> dict:
    import numpy as np

    from dynloss_jax import results
    from dynloss_jax.config import normalised
    from dynloss_jax.strategy import default_strategy
    from dynloss_jax.sweep import run_sweep

    stored = results.load_run(REFERENCE, unfinished=False)
    config = reference_config()
    if normalised(stored.config["settings"]) != config.settings():
        raise RuntimeError("the stored reference sweep has other settings: --write-reference")
    times = []
    runs = []
    for _ in range(2):
        t = time.perf_counter()
        runs.append(run_sweep(config, strategy=default_strategy()))
        times.append(time.perf_counter() - t)
    first, second = runs
    differ = [
        k
        for k in first.arrays
        if not np.array_equal(first.arrays[k], second.arrays[k], equal_nan=True)
    ]
    emit("determinism", {"arrays": len(first.arrays), "differ": differ})
    vs = compare_arrays(first.arrays, stored.arrays)
    env = stored.config.get("environment", {})
    return {
        "seconds": times,
        "determinism": {
            "arrays": len(first.arrays),
            "bit_identical": not differ,
            "differ": differ,
        },
        "reference_machine": {k: env.get(k) for k in ("backend", "device_kind", "cpu_model")},
        "vs_reference": vs,
        "headline": {
            key: vs[key].get("max_rel")
            for key in ("instability_lam", "gamma", "loss", "final_val_acc", "lam")
        },
        "instability_step_differ": vs["instability_step"].get("differ"),
    }


def experiment_part(module: str, tiny: bool, dtype: str, emit) -> dict:
    """Runs an experiment's sweeps (its full preset, or its smoke preset with ``tiny``) in
    ``dtype`` without writing folders, timing each, and returns the times and its summary."""
    import dataclasses
    import importlib

    from dynloss_jax.strategy import default_strategy
    from dynloss_jax.sweep import run_sweep

    exp = importlib.import_module(f"experiments.{module}")
    s = dict(exp.SMOKE if tiny else exp.FULL)
    if module == "fig3_width_sweep":
        s["panels"] = ("a",)
    if module == "fig4_instability":
        s["dense_seeds"] = 0  # λ1 at every step: a study of its own, not a throughput figure
        if dtype == "float32" and not tiny:  # the two longest sweeps left out, to fit a lease
            s["etas_ce"], s["etas_mse"] = s["etas_ce"][1:], s["etas_mse"][1:]
    configs = {
        key: dataclasses.replace(config, dtype=dtype).validate()
        for key, config in exp.configs(s).items()
    }
    runs, sweeps = {}, {}
    started = time.perf_counter()
    for key, config in configs.items():
        t = time.perf_counter()
        runs[key] = run_sweep(config, strategy=default_strategy())
        sweeps[key] = {
            "seconds": time.perf_counter() - t,
            "compile_s": runs[key].config["compile_s"],
            "programs": runs[key].config["programs"],
            "runs": int(len(config.runs()["seed"])) * len(config.loss) * len(config.width),
            "steps": config.steps,
        }
        emit(key, sweeps[key])
    seconds = time.perf_counter() - started
    return {
        "dtype": dtype,
        "seconds": seconds,
        "programs": sum(v["programs"] for v in sweeps.values()),
        "sweeps": sweeps,
        "summary": exp.summarise(runs),
    }


def _compact_fig4(summary: dict) -> dict:
    """Fig. 4's summary without its per-condition rows (they stay in the float64 part)."""
    return {k: v for k, v in summary.items() if k not in ("conditions", "crossing")}


PART_FUNCTIONS = {
    "default": part_default,
    "reference": part_reference,
    "big": part_big,
    "fig3a": lambda tiny, emit: experiment_part("fig3_width_sweep", tiny, "float64", emit),
    "fig3a_f32": lambda tiny, emit: experiment_part("fig3_width_sweep", tiny, "float32", emit),
    "fig4": lambda tiny, emit: experiment_part("fig4_instability", tiny, "float64", emit),
    "fig4_f32": lambda tiny, emit: experiment_part("fig4_instability", tiny, "float32", emit),
    "flows": part_flows,
}


def worker(parts: list[str], events_path: str, mode: str) -> int:
    from experiments.common import setup

    setup()  # every CPU core a device (on a CPU backend) and float64, as the experiments
    import jax

    from dynloss_jax.environment import environment

    backend = jax.default_backend()
    tiny = mode == "tiny" or (mode == "auto" and backend == "cpu")
    events = Events(events_path)
    events.emit("", "worker", backend=backend, tiny=tiny, environment=environment())
    for part in parts:
        events.emit(part, "begin", t=time.time())
        try:
            result = PART_FUNCTIONS[part](
                tiny, lambda k, v, p=part: events.emit(p, "piece", key=k, value=v)
            )
            if part.startswith("fig4"):
                result["summary"] = _compact_fig4(result["summary"])
            events.emit(part, "done", result=result)
        except Exception:  # noqa: BLE001 — a failing part is recorded, the next one runs
            events.emit(part, "error", error=traceback.format_exc()[-4000:])
        jax.clear_caches()
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: boxes, JSON, table


def _read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    if not path.exists():
        return [], offset
    with open(path, encoding="utf-8") as f:
        f.seek(offset)
        text = f.read()
    complete = text[: text.rfind("\n") + 1]
    lines = [json.loads(ln) for ln in complete.splitlines() if ln.strip()]
    return lines, offset + len(complete.encode("utf-8"))


def run_check(parts, budget_s: float, mode: str, out: Path | None, log) -> dict:
    """Runs ``parts`` in worker processes within ``budget_s`` seconds; returns the report."""
    scale = budget_s / BUDGET_S
    report: dict = {
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:]),
        "budget_s": budget_s,
        "parts": {},
        "load_avg_before": list(os.getloadavg()),
    }
    started = time.time()
    remaining = list(parts)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    events_path = tmp / "events.jsonl"
    begun: dict = {}  # part -> when it started

    def save():
        report["wall_s"] = round(time.time() - started, 1)
        report["load_avg_after"] = list(os.getloadavg())
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1, default=float) + "\n")

    while remaining:
        if time.time() - started > budget_s:
            for part in remaining:
                report["parts"][part] = {"status": "skipped", "why": "budget spent"}
            break
        offset = events_path.stat().st_size if events_path.exists() else 0
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--worker", json.dumps(remaining)]
        cmd += ["--events", str(events_path), "--mode", mode]
        stderr = open(tmp / "worker.err", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        current, deadline = None, None
        while True:
            lines, offset = _read_events(events_path, offset)
            for ev in lines:
                part, kind = ev["part"], ev["kind"]
                if kind == "worker":
                    report["backend"], report["tiny"] = ev["backend"], ev["tiny"]
                    report["environment"] = ev["environment"]
                elif kind == "begin":
                    current, begun[part] = part, time.time()
                    box = BOX_S[part] * scale
                    deadline = min(time.time() + box, started + budget_s)
                    report["parts"][part] = {"status": "running", "box_s": round(box, 1)}
                    log(f"{part}: started (box {box:.0f} s)")
                elif kind == "piece":
                    report["parts"][part].setdefault("pieces", {})[ev["key"]] = ev["value"]
                    log(f"{part}: {ev['key']} done")
                else:
                    entry = report["parts"][part]
                    entry["status"] = "done" if kind == "done" else "error"
                    entry["wall_s"] = round(time.time() - begun[part], 1)
                    if kind == "done":
                        entry.update(ev["result"])
                    else:
                        entry["error"] = ev["error"]
                        log(f"{part}: error\n{ev['error']}")
                    remaining.remove(part)
                    current = None
                    log(f"{part}: {entry['status']}")
                save()
            if proc.poll() is not None:
                lines, offset = _read_events(events_path, offset)
                if lines:
                    continue
                if current is not None:  # the worker died inside a part
                    err = (tmp / "worker.err").read_text()[-3000:]
                    report["parts"][current].update(status="crashed", error=err)
                    remaining.remove(current)
                    log(f"{current}: the worker died\n{err}")
                elif remaining and proc.returncode != 0:
                    err = (tmp / "worker.err").read_text()[-3000:]
                    for part in remaining:
                        report["parts"][part] = {"status": "crashed", "error": err}
                    remaining = []
                save()
                break
            if current is not None and time.time() > deadline:
                proc.kill()
                proc.wait()
                entry = report["parts"][current]
                entry["status"] = "timed_out"
                entry["wall_s"] = round(time.time() - begun[current], 1)
                remaining.remove(current)
                log(f"{current}: timed out after {entry['wall_s']} s")
                save()
                break
            time.sleep(0.2)
        stderr.close()
    report["f32_study"] = f32_study(report["parts"])
    save()
    return report


# ---------------------------------------------------------------------------------------------
# float32 against float64


def _z(a, b) -> float | None:
    """(mean_b − mean_a) / sqrt(sem_a² + sem_b²) for (mean, sem, ...) pairs; None if undefined."""
    import math

    d = b[0] - a[0]
    s = math.hypot(a[1], b[1])
    if not (math.isfinite(d) and math.isfinite(s)):
        return None
    return d / s if s > 0 else (0.0 if d == 0 else None)


def f32_study(parts: dict) -> dict:
    """Where both precisions finished: Fig. 3a's validation accuracies and Fig. 4's λ1 at the
    onset, float32 against float64, in units of their combined statistical error."""
    out: dict = {}
    a, b = parts.get("fig3a", {}), parts.get("fig3a_f32", {})
    if a.get("status") == "done" and b.get("status") == "done":
        rows = []
        for ra, rb in zip(a["summary"]["a"], b["summary"]["a"], strict=True):
            row = {"width": ra["width"]}
            for loss in ("ce", "dce"):
                row[loss] = {"f64": ra[loss][:2], "f32": rb[loss][:2], "z": _z(ra[loss], rb[loss])}
            rows.append(row)
        zs = [abs(r[k]["z"]) for r in rows for k in ("ce", "dce") if r[k]["z"] is not None]
        out["fig3a"] = {"rows": rows, "max_abs_z": max(zs) if zs else None, "compared": len(zs)}
    a, b = parts.get("fig4", {}), parts.get("fig4_f32", {})
    if a.get("status") == "done" and b.get("status") == "done":
        rows = []
        f64 = {(r["loss"], r["eta"]): r for r in a["summary"]["rows"]}
        for rb in b["summary"]["rows"]:
            ra, eta = f64[rb["loss"], rb["eta"]], rb["eta"]
            rows.append(
                {
                    "loss": ra["loss"],
                    "eta": eta,
                    "ratio_f64": eta * ra["lam_mean"] / 2,
                    "ratio_f32": eta * rb["lam_mean"] / 2,
                    "z": _z((ra["lam_mean"], ra["lam_sem"]), (rb["lam_mean"], rb["lam_sem"])),
                    "found_f64": ra["found"],
                    "found_f32": rb["found"],
                    "runs": ra["runs"],
                    "onset_step_median_f64": ra["onset_step_median"],
                    "onset_step_median_f32": rb["onset_step_median"],
                }
            )
        fits = {}
        same_etas = {(r["loss"], r["eta"]) for r in b["summary"]["rows"]} == set(f64)
        for loss, fa in a["summary"]["fits"].items() if same_etas else ():
            fb = b["summary"]["fits"][loss]
            fits[loss] = {
                "slope_f64": (fa["slope"], fa["slope_se"]),
                "slope_f32": (fb["slope"], fb["slope_se"]),
                "z": _z((fa["slope"], fa["slope_se"]), (fb["slope"], fb["slope_se"])),
            }
        zs = [abs(r["z"]) for r in rows if r["z"] is not None]
        out["fig4"] = {
            "rows": rows,
            "fits": fits,
            "max_abs_z": max(zs) if zs else None,
            "compared": len(zs),
        }
    return out


def format_table(report: dict) -> str:
    """The report as a few lines a person reads."""
    lines = [
        f"backend {report.get('backend', '?')}"
        f"{' (tiny sizes)' if report.get('tiny') else ''}; "
        f"{report.get('environment', {}).get('device_kind', '')}; "
        f"wall {report.get('wall_s', 0):.0f} s of a {report['budget_s']:.0f} s budget",
        f"{'part':10s} {'status':10s} {'seconds':>8s}  result",
    ]
    for part, entry in report["parts"].items():
        seconds = entry.get("wall_s", 0)
        lines.append(f"{part:10s} {entry['status']:10s} {seconds:8.1f}  {_headline(part, entry)}")
    study = report.get("f32_study", {})
    for name, s in study.items():
        lines.append(
            f"f32 vs f64, {name}: largest |difference| {s['max_abs_z']:.2f} combined s.e.m. "
            f"over {s['compared']} comparisons"
            if s["max_abs_z"] is not None
            else f"f32 vs f64, {name}: nothing comparable"
        )
    return "\n".join(lines)


def _headline(part: str, e: dict) -> str:
    if e["status"] != "done":
        return ", ".join(f"{k} done" for k in e.get("pieces", {})) or "—"
    if part == "default":
        return (
            f"engine {e['engine']['seed_steps_per_s']:.0f} seed-steps/s "
            f"(no tracking {e['engine_no_tracking']['seed_steps_per_s']:.0f}); authors' workflow "
            f"{e['authors_workflow']['seed_steps_per_s']:.0f}, async "
            f"{e['authors_workflow_async']['seed_steps_per_s']:.0f}: "
            f"×{e['speedup_vs_async_peer']:.0f} the async peer"
        )
    if part == "big":
        return (
            ", ".join(
                f"{k} {e[k]['seed_steps_per_s']:.0f}" for k in ("f64", "f64_no_tracking", "f32")
            )
            + " seed-steps/s"
        )
    if part == "flows":
        w = e["workload"]
        return (
            f"{w['runs']} flows × {w['steps']} steps: {e['flow_steps_per_s']:.0f} flow-steps/s "
            f"(first call {e['first_call_s']:.0f} s)"
        )
    if part == "reference":
        h = e["headline"]
        ok = "bit-identical" if e["determinism"]["bit_identical"] else "NOT bit-identical"
        return (
            f"rerun {ok}; vs CPU: λ at onset {h['instability_lam']:.1e}, Γ {h['gamma']:.1e}, "
            f"loss {h['loss']:.1e} (max relative)"
        )
    return f"{e['programs']} programs, {e['seconds']:.1f} s"


def compare_summaries(f64_path, f32_path, out) -> int:
    """The f32 study of two stored experiment summaries (Fig. 4's have ``rows``, Fig. 3's a
    panel ``a``), printed and written to ``out``."""
    a, b = (json.loads(Path(p).read_text()) for p in (f64_path, f32_path))
    name = "fig4" if "rows" in a else "fig3a"
    study = f32_study(
        {name: {"status": "done", "summary": a}, f"{name}_f32": {"status": "done", "summary": b}}
    )
    report = {
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:]),
        "float64": str(f64_path),
        "float32": str(f32_path),
        **study,
    }
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    s = study[name]
    print(f"{name}: largest |f32 − f64| {s['max_abs_z']:.2f} combined s.e.m. over {s['compared']}")
    return 0


def write_reference() -> int:
    """Computes the reference sweep on this machine into ``REFERENCE`` (meant for a CPU)."""
    from experiments.common import setup

    setup()
    from dynloss_jax.sweep import run_sweep

    run_sweep(
        reference_config(),
        REFERENCE,
        overwrite=True,
        command=["python", "-m", "benchmarks.gpu_check", "--write-reference"],
    )
    print(f"wrote {REFERENCE}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the JSON report here (rewritten after every piece)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="tiny sizes (default on a CPU)")
    size.add_argument("--full", action="store_true", help="full sizes (default on accelerators)")
    p.add_argument("--write-reference", action="store_true", help=write_reference.__doc__)
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("F64_SUMMARY", "F32_SUMMARY"),
        help="only compare two stored summary.json files of Fig. 3 or Fig. 4 (float64, "
        "float32) as the f32 study does, and write the result to --out",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--events", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker), args.events, args.mode)
    if args.write_reference:
        return write_reference()
    if args.compare:
        return compare_summaries(*args.compare, args.out)
    if not args.budget > 0:
        p.error("--budget must be a positive number of seconds")
    mode = "tiny" if args.tiny else "full" if args.full else "auto"

    def log(msg):
        if not args.quiet:
            print(f"gpu_check: {msg}", file=sys.stderr, flush=True)

    parts = [part for part in PARTS if part in args.parts]
    report = run_check(parts, args.budget, mode, Path(args.out) if args.out else None, log)
    print(format_table(report))
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
