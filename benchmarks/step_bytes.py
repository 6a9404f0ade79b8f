"""Bytes and flops of one seed-step: XLA's estimate for the compiled engine, a lower bound by
hand, and the fraction of an H200's memory bandwidth that the stored GPU rates reach.

    python -m benchmarks.step_bytes --out docs/results/benchmarks/step_bytes.json
    python -m benchmarks.step_bytes --runs 1 8 --dtypes float64 --steps 25 100

The workload is the default benchmark's: DCE, width 100, the 300-point spiral, records every 5
steps, and either λ1/λ2 every 25 steps from 16 Lanczos products or no Hessian tracking. For each
batch size R (runs vmapped together on one device), dtype and tracking setting, the engine's
``advance`` program is lowered and compiled for T steps. It is only compiled, never run.

**How XLA counts loops.** ``compiled.cost_analysis()`` costs the body of a while loop once,
whatever its trip count. The steps are nested ``lax.scan`` loops (intervals, record blocks, the
steps of a block) and Lanczos is a loop of 16 products, so its totals for 25 and 100 steps
differ only by the small body of the outermost loop (both stored). The per-step figures
therefore come from the optimised HLO (``compiled.as_text()``). :func:`hlo_cost` costs each
instruction the way XLA's cost analysis does: a fusion reads its operands (only the sliced part
of an operand it slices) and writes its output, an in-place dynamic-update-slice writes only its
update, and dots, copies and the other unfused operations read their operands and write their
result. It multiplies each loop body by the loop's ``known_trip_count``. Costing every loop once
(``scale_loops=False``) gives back XLA's own totals to within 1 % (both are stored for every
row); that is the check that instructions are costed as XLA costs them. Per seed-step means
(walk at T2 − walk at T1) / ((T2 − T1)·R), so the part of the program outside the step loop
cancels.

**Lower bound by hand** (itemsize s, P points, W hidden units, N parameters, D inputs, C
classes, R runs, m Lanczos products every k steps), per seed-step:

    B_min = s·(2PW + 4N + P(D + C)/R)  +  s·m·(2PW + 2N)/k

2PW: the hidden activations h (P × W), written by the forward pass and read back by the
backward pass. 4N: the parameters read, the gradient written and read, the new parameters
written. P(D + C)/R: the training data, read once per step for all R runs. Each Hessian-vector
product writes and reads the tangent of h (2PW), reads v and writes Hv (2N). The validation
forward pass (every ``record_every`` steps) and the Lanczos basis are left out. The bound
assumes h goes to memory once; a kernel that kept a run's h on chip would not need the 2PW
terms. Each row also gives the bytes of the operations that read or write an array of at least
P × W elements per run, in units of one P × W array (``passes_over_PxW``: 2 in the bound
without tracking, 2 + 2m/k with it), the operations executed per step (fusions, copies, dots)
and the largest unfused operations and the largest fusions that transpose.

**GPU.** The seed-step rates stored in ``docs/results/benchmarks/gpu/gpu_check.json``
(``default``: 8 seeds, float64, with and without tracking; ``big``: 1024 seeds, float64 with
and without tracking and float32) times these bytes give the bytes per second a GPU step would
move, and its fraction of the H200's 4.8 TB/s HBM bandwidth (NVIDIA's specification), next to
the time of one step of all runs (``step_us``) and the operations the CPU program executes in
it. This is an estimate: the cost analysis is of the CPU program, and the GPU compiler fuses
differently and calls cuBLAS for its dots, so the bytes a GPU step moves may differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "docs" / "results" / "benchmarks" / "gpu" / "gpu_check.json"
H200_HBM_BYTES_PER_S = 4.8e12  # NVIDIA's specification of the H200 (HBM3e, 4.8 TB/s)
H200_HBM_SOURCE = "NVIDIA H200 Tensor Core GPU specification: GPU memory bandwidth 4.8 TB/s"

WORKLOAD = dict(
    loss="dce",
    width=100,
    points_per_class=100,
    record_every=5,
    eig_every=25,
    num_matvecs=16,
    amplitude=70.0,
    period=5000,
    eta=1.0,
)
# gpu_check.json: (part, piece) -> (runs, dtype, tracking)
GPU_PIECES = {
    ("default", "engine"): (8, "float64", True),
    ("default", "engine_no_tracking"): (8, "float64", False),
    ("big", "f64"): (1024, "float64", True),
    ("big", "f64_no_tracking"): (1024, "float64", False),
    ("big", "f32"): (1024, "float32", True),
}


# ---------------------------------------------------------------------------------------------
# The lower bound by hand


def hand_bytes(
    *,
    points: int,
    width: int,
    n_params: int,
    n_inputs: int,
    n_classes: int,
    itemsize: int,
    runs: int,
    eig_every: int,
    num_matvecs: int,
) -> dict:
    """B_min per seed-step, term by term (see the module docstring); ``total`` is their sum."""
    s, p, w, n = itemsize, points, width, n_params
    terms = {
        "activations": s * 2 * p * w,
        "parameters": s * 4 * n,
        "data": s * p * (n_inputs + n_classes) / runs,
        "hvp": s * num_matvecs * (2 * p * w + 2 * n) / eig_every if eig_every else 0.0,
    }
    return {**terms, "total": sum(terms.values())}


# ---------------------------------------------------------------------------------------------
# The optimised HLO: parsed, and costed with loops counted as often as they run

ITEMSIZE = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_ARRAY = re.compile(r"\b(pred|bf16|c64|c128|[suf]\d+)\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*->.*\{\s*$")
_INSTR = re.compile(r"^\s+(ROOT\s+)?%?([\w.\-]+)\s+=\s+(.*)$")
FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
}
SLICES = {"slice", "dynamic-slice"}
TRANSCENDENTAL = {
    "exponential",
    "exponential-minus-one",
    "log",
    "log-plus-one",
    "sqrt",
    "rsqrt",
    "cbrt",
    "tanh",
    "logistic",
    "power",
    "sine",
    "cosine",
    "atan2",
    "erf",
}
ELEMENTWISE = {
    "add",
    "subtract",
    "multiply",
    "divide",
    "maximum",
    "minimum",
    "compare",
    "select",
    "and",
    "or",
    "xor",
    "not",
    "negate",
    "abs",
    "sign",
    "remainder",
    "clamp",
    "is-finite",
    "ceil",
    "floor",
    "round-nearest-even",
    "round-nearest-afz",
    "shift-left",
    "shift-right-logical",
    "shift-right-arithmetic",
    "convert",
    "popcnt",
    "clz",
}


class Instr(NamedTuple):
    name: str
    shape: str
    opcode: str
    operands: tuple[str, ...]
    attrs: str
    root: bool


def _closing(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0 and text[i] == ")":
            return i
    raise ValueError(f"unbalanced parentheses: {text[start : start + 80]!r}")


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(t, tuple(int(d) for d in dims.split(",") if d)) for t, dims in _ARRAY.findall(shape)]


def nbytes(shape: str) -> int:
    """Bytes of an HLO shape (a tuple: of all its arrays)."""
    return sum(ITEMSIZE[t] * math.prod(dims) for t, dims in _arrays(shape))


def _elements(shape: str) -> int:
    return sum(math.prod(dims) for _, dims in _arrays(shape))


def _strip_layout(shape: str) -> str:
    return re.sub(r"\{[\d,]*\}", "", shape)


def parse_hlo(text: str) -> tuple[str, dict[str, list[Instr]]]:
    """The entry computation's name and every computation's instructions, of an HLO module's
    text (``compiled.as_text()``)."""
    comps: dict[str, list[Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = m.group(2)
                comps[current] = []
                entry = current if m.group(1) else entry
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        root, name, rest = m.groups()
        if rest.startswith("("):
            end = _closing(rest, 0)
            shape, rest = rest[: end + 1], rest[end + 1 :].lstrip()
        else:
            shape, _, rest = rest.partition(" ")
        opcode = rest[: rest.index("(")]
        end = _closing(rest, len(opcode))
        operands = tuple(re.findall(r"%([\w.\-]+)", rest[len(opcode) : end + 1]))
        comps[current].append(Instr(name, shape, opcode, operands, rest[end + 1 :], bool(root)))
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return entry, comps


def _attr(attrs: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=%?([\w.\-]+)", attrs)
    return m.group(1) if m else None


def _op_name(attrs: str) -> str:
    m = re.search(r'op_name="([^"]*)"', attrs)
    return m.group(1).split("closed_call/")[-1] if m else ""


def _use_bytes(use: Instr, param: Instr) -> int:
    if use.operands[0] == param.name and use.opcode in SLICES:
        return nbytes(use.shape)
    if use.operands[0] == param.name and use.opcode == "dynamic-update-slice":
        return 0  # updated in place
    return nbytes(param.shape)


def _fusion_bytes(ins: Instr, fused: list[Instr]) -> int:
    """Operands read plus output written. Each use of an operand reads the part it slices,
    nothing when it updates the operand in place, all of it otherwise (at most all of it over
    its uses); an in-place root writes only its update."""
    users = defaultdict(list)
    for f in fused:
        for o in f.operands:
            users[o].append(f)
    read = 0
    for p in (f for f in fused if f.opcode == "parameter"):
        read += min(sum(_use_bytes(u, p) for u in users[p.name]), nbytes(p.shape))
    root = next(f for f in fused if f.root)
    if root.opcode == "dynamic-update-slice":
        shapes = {f.name: f.shape for f in fused}
        return read + nbytes(shapes[root.operands[1]])
    return read + nbytes(ins.shape)


def _bytes(ins: Instr, comps, shapes) -> int:
    if ins.opcode in FREE:
        return 0
    if ins.opcode == "fusion":
        return _fusion_bytes(ins, comps[_attr(ins.attrs, "calls")])
    if ins.opcode in SLICES:
        return 2 * nbytes(ins.shape)
    if ins.opcode == "dynamic-update-slice":
        return 2 * nbytes(shapes[ins.operands[1]])
    return sum(nbytes(shapes[o]) for o in ins.operands) + nbytes(ins.shape)


def _flops(ins: Instr, shapes) -> tuple[int, int]:
    """(flops, transcendentals) of one instruction: 2·M·N·K for a dot, one per element for an
    elementwise operation, one per input element for a reduction."""
    if ins.opcode == "dot":
        lhs = _arrays(shapes[ins.operands[0]])[0][1]
        dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attrs).group(1)
        k = math.prod(lhs[int(d)] for d in dims.split(",") if d)
        return 2 * _elements(ins.shape) * k, 0
    if ins.opcode in ELEMENTWISE:
        return _elements(ins.shape), 0
    if ins.opcode in TRANSCENDENTAL:
        return 0, _elements(ins.shape)
    if ins.opcode in ("reduce", "reduce-window"):
        return _elements(shapes[ins.operands[0]]), 0
    return 0, 0


def _fused_flops(name: str, comps, memo: dict) -> tuple[int, int]:
    if name not in memo:
        shapes = {i.name: i.shape for i in comps[name]}
        flops = trans = 0
        for i in comps[name]:
            f, t = (
                _fused_flops(_attr(i.attrs, "calls"), comps, memo)
                if i.opcode == "fusion"
                else (0, 0)
            )
            f2, t2 = _flops(i, shapes)
            flops, trans = flops + f + f2, trans + t + t2
        memo[name] = (flops, trans)
    return memo[name]


def _transposes(fused: list[Instr]) -> bool:
    """Whether a fusion changes a layout: holds a transpose, or a copy."""
    return any(f.opcode in ("transpose", "copy") for f in fused)


def hlo_cost(text: str, scale_loops: bool = True) -> dict:
    """Bytes accessed, flops and transcendentals of an optimised HLO module, each loop body
    counted ``known_trip_count`` times (once with ``scale_loops=False``, as XLA's cost analysis
    does); the number of executed operations by opcode; every costed instruction (``items``:
    weighted bytes, times executed, opcode, name, shape, what it computes, whether a fusion
    holds a transpose)."""
    entry, comps = parse_hlo(text)
    total = Counter()
    items = []
    memo: dict = {}

    def visit(name: str, times: int) -> None:
        shapes = {i.name: i.shape for i in comps[name]}
        for i in comps[name]:
            if i.opcode == "while":
                m = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', i.attrs)
                if m is None:
                    total["unknown_trip_counts"] += 1
                trips = int(m.group(1)) if m and scale_loops else 1
                visit(_attr(i.attrs, "body"), times * trips)
                visit(_attr(i.attrs, "condition"), times * (trips + 1 if scale_loops else 1))
                continue
            if i.opcode == "call":
                visit(_attr(i.attrs, "to_apply"), times)
                continue
            if i.opcode == "conditional":
                raise NotImplementedError("conditional in the step program")
            if i.opcode in FREE:
                continue
            f, t = _flops(i, shapes)
            transposes = False
            if i.opcode == "fusion":
                fused = _attr(i.attrs, "calls")
                f2, t2 = _fused_flops(fused, comps, memo)
                f, t = f + f2, t + t2
                transposes = _transposes(comps[fused])
            b = _bytes(i, comps, shapes)
            total["bytes"] += times * b
            total["flops"] += times * f
            total["transcendentals"] += times * t
            total["op:" + i.opcode] += times
            if transposes:
                total["op:fusion with transpose"] += times
            operands = tuple(_strip_layout(shapes[o]) for o in i.operands)
            items.append(
                (
                    times * b,
                    times,
                    i.opcode,
                    i.name,
                    i.shape,
                    _op_name(i.attrs),
                    transposes,
                    operands,
                )
            )

    visit(entry, 1)
    items.sort(key=lambda r: -r[0])
    ops = {k[3:]: v for k, v in total.items() if k.startswith("op:")}
    return {
        "bytes": total["bytes"],
        "flops": total["flops"],
        "transcendentals": total["transcendentals"],
        "ops": ops,
        "unknown_trip_counts": total["unknown_trip_counts"],
        "items": items,
    }


# ---------------------------------------------------------------------------------------------
# The engine's program


def workload_config(runs: int, dtype: str, eig_every: int, steps: int, **over):
    """The default benchmark's sweep settings for ``runs`` seeds, compiled as one chunk."""
    from dynloss_jax.sweep import SweepConfig

    w = {**WORKLOAD, **over}
    return SweepConfig(
        loss=(w["loss"],),
        width=(w["width"],),
        seeds=runs,
        steps=steps,
        record_every=w["record_every"],
        eig_every=eig_every,
        num_matvecs=w["num_matvecs"],
        dtype=dtype,
        points_per_class=w["points_per_class"],
        chunk_steps=steps,
        amplitude=(w["amplitude"],),
        period=(w["period"],),
        eta=(w["eta"],),
    ).validate()


def compile_step_program(runs: int, dtype: str, eig_every: int, steps: int, **over):
    """The engine's ``advance`` for ``steps`` steps of ``runs`` runs in one vmap, compiled
    (not run); returns ``(compiled, spec, data)``."""
    import jax

    from dynloss_jax import engine
    from dynloss_jax.spec import RunSpec, make_hyper
    from dynloss_jax.strategy import Strategy

    config = workload_config(runs, dtype, eig_every, steps, **over)
    (program,) = config.programs()
    spec = RunSpec.from_config(config, **program)
    data = config.arrays()
    hyper = make_hyper(**config.program_runs(program), dtype=dtype)
    init, advance, _ = engine.compiled(spec, steps, Strategy(batch_size=0, n_devices=1))
    state = jax.eval_shape(init, hyper, data)
    return advance.lower(state, hyper, data).compile(), spec, data


def xla_cost(compiled) -> dict:
    """XLA's own estimate (``cost_analysis``): totals, and bytes by operand and output."""
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    operand = {k: v for k, v in ca.items() if re.fullmatch(r"bytes accessed\d+\{\}", k)}
    return {
        "bytes": ca.get("bytes accessed"),
        "flops": ca.get("flops"),
        "transcendentals": ca.get("transcendentals"),
        "bytes_output": ca.get("bytes accessedout{}"),
        "bytes_by_operand": [operand[k] for k in sorted(operand, key=lambda k: int(k[14:-2]))],
    }


def _item(row) -> dict:
    b, times, opcode, name, shape, what, _, operands = row
    return {
        "opcode": opcode,
        "name": name,
        "shape": _strip_layout(shape),
        "operands": list(operands),
        "computes": what,
        "times": times,
        "bytes": b,
    }


def measure(runs: int, dtype: str, eig_every: int, steps=(25, 100), top: int = 6, **over) -> dict:
    """One row: XLA's cost analysis at each step count, the HLO walk with loops once and
    scaled, per seed-step figures from the two step counts, the hand bound, the operations a
    step executes and its largest unfused operations and transposing fusions."""
    t1, t2 = steps
    out: dict = {"runs": runs, "dtype": dtype, "eig_every": eig_every, "steps": list(steps)}
    xla, once, walks, spec, compile_s = {}, {}, {}, None, {}
    for t in steps:
        start = time.perf_counter()
        compiled, spec, data = compile_step_program(runs, dtype, eig_every, t, **over)
        compile_s[t] = time.perf_counter() - start
        text = compiled.as_text()
        xla[t] = xla_cost(compiled)
        once[t] = {k: v for k, v in hlo_cost(text, scale_loops=False).items() if k != "items"}
        walks[t] = hlo_cost(text)
    per = (t2 - t1) * runs
    a, b = walks[t1], walks[t2]
    seed_step = {k: (b[k] - a[k]) / per for k in ("bytes", "flops", "transcendentals")}
    ops = {k: (b["ops"].get(k, 0) - a["ops"].get(k, 0)) / (t2 - t1) for k in b["ops"]}
    x = data.x_train
    bound = hand_bytes(
        points=x.shape[0],
        width=max(spec.widths),
        n_params=spec.model.n_params,
        n_inputs=x.shape[1],
        n_classes=spec.n_classes,
        itemsize=x.dtype.itemsize,
        runs=runs,
        eig_every=eig_every,
        num_matvecs=spec.num_matvecs,
    )
    # the items of the longer program, by bytes per step (the outer-loop part is small)
    items = b["items"]
    unfused = [r for r in items if r[2] != "fusion"][:top]
    transposing = [r for r in items if r[6]][:top]
    # operations that read or write an array at least as large as the hidden activations
    pw = x.shape[0] * max(spec.widths) * runs
    big = sum(r[0] for r in items if max(_elements(sh) for sh in (r[4], *r[7])) >= pw)
    big_per_seed_step = big / (t2 * runs)
    out.update(
        xla_cost_analysis={str(t): xla[t] for t in steps},
        walk_loops_once={str(t): once[t] for t in steps},
        walk_once_over_xla={
            str(t): {k: once[t][k] / xla[t][k] for k in ("bytes", "flops")} for t in steps
        },
        walk={
            str(t): {k: walks[t][k] for k in ("bytes", "flops", "transcendentals")} for t in steps
        },
        per_seed_step=seed_step,
        flops_per_byte=seed_step["flops"] / seed_step["bytes"],
        hand_lower_bound=bound,
        pxw_ops={
            "bytes_per_seed_step": big_per_seed_step,
            "share": big / b["bytes"],
            "passes_over_PxW": big_per_seed_step / (x.dtype.itemsize * pw / runs),
        },
        bytes_over_bound=seed_step["bytes"] / bound["total"],
        ops_per_step=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        largest_unfused=[{**_item(r), "bytes_per_step": r[0] / t2} for r in unfused],
        largest_transposing_fusions=[
            {**_item(r), "bytes_per_step": r[0] / t2} for r in transposing
        ],
        compile_s={str(t): round(s, 2) for t, s in compile_s.items()},
    )
    return out


# ---------------------------------------------------------------------------------------------
# The stored GPU rates


def gpu_rows(rows: list[dict], path: Path = GPU_CHECK) -> dict:
    """Achieved bytes and flops per second of the stored H200 rates, and the fraction of the
    HBM bandwidth; rows of this run's measurements that match each stored piece."""
    stored = json.loads(Path(path).read_text())
    out = []
    for (part, piece), (runs, dtype, tracking) in GPU_PIECES.items():
        rate = stored["parts"].get(part, {}).get(piece, {}).get("seed_steps_per_s")
        row = next(
            (
                r
                for r in rows
                if r["runs"] == runs and r["dtype"] == dtype and bool(r["eig_every"]) == tracking
            ),
            None,
        )
        if rate is None or row is None:
            continue
        per = row["per_seed_step"]
        bound = row["hand_lower_bound"]["total"]
        out.append(
            {
                "part": part,
                "piece": piece,
                "runs": runs,
                "dtype": dtype,
                "tracking": tracking,
                "seed_steps_per_s": rate,
                "bytes_per_seed_step": per["bytes"],
                "bytes_per_s": rate * per["bytes"],
                "fraction_of_hbm": rate * per["bytes"] / H200_HBM_BYTES_PER_S,
                "bound_bytes_per_s": rate * bound,
                "bound_fraction_of_hbm": rate * bound / H200_HBM_BYTES_PER_S,
                "flops_per_s": rate * per["flops"],
                "step_us": 1e6 * runs / rate,
                "ops_per_step": sum(
                    v for k, v in row["ops_per_step"].items() if k != "fusion with transpose"
                ),
            }
        )
    return {
        "source": str(Path(path).relative_to(ROOT))
        if Path(path).is_relative_to(ROOT)
        else str(path),
        "device": stored.get("environment", {}).get("device_kind"),
        "hbm_bytes_per_s": H200_HBM_BYTES_PER_S,
        "hbm_source": H200_HBM_SOURCE,
        "caveat": (
            "bytes per seed-step are XLA's estimate for the CPU program; the GPU compiler fuses "
            "differently and calls cuBLAS for its dots, so the GPU step may move other amounts: "
            "an estimate, not a measurement of GPU memory traffic"
        ),
        "rows": out,
    }


def format_report(report: dict) -> str:
    lines = [
        f"{'R':>5s} {'dtype':8s} {'λ':>3s} {'MB/seed-step':>12s} {'bound MB':>9s} {'× bound':>8s} "
        f"{'P×W passes':>10s} {'MFLOP':>7s} {'FLOP/B':>7s} {'fusions':>8s} {'copies':>7s} "
        f"{'dots':>5s}"
    ]
    for r in report["rows"]:
        per, ops = r["per_seed_step"], r["ops_per_step"]
        lines.append(
            f"{r['runs']:5d} {r['dtype']:8s} {'yes' if r['eig_every'] else 'no':>3s} "
            f"{per['bytes'] / 1e6:12.3f} {r['hand_lower_bound']['total'] / 1e6:9.3f} "
            f"{r['bytes_over_bound']:8.1f} {r['pxw_ops']['passes_over_PxW']:10.1f} "
            f"{per['flops'] / 1e6:7.3f} {r['flops_per_byte']:7.2f} "
            f"{ops.get('fusion', 0):8.1f} {ops.get('copy', 0):7.1f} {ops.get('dot', 0):5.1f}"
        )
    lines.append(
        "(P×W passes: bytes of the operations on arrays of at least P×W elements per run, in "
        "units of one P×W array; fusions, copies, dots: executed per step, all R runs together)"
    )
    gpu = report.get("gpu")
    if gpu and gpu["rows"]:
        lines += ["", f"stored {gpu['device']} rates against {gpu['hbm_bytes_per_s'] / 1e12} TB/s:"]
        for g in gpu["rows"]:
            lines.append(
                f"  {g['part']}.{g['piece']:18s} {g['seed_steps_per_s']:10.0f} seed-steps/s × "
                f"{g['bytes_per_seed_step'] / 1e6:.3f} MB = {g['bytes_per_s'] / 1e12:.3f} TB/s "
                f"({g['fraction_of_hbm']:.1%}; the hand bound: {g['bound_fraction_of_hbm']:.1%})"
            )
        lines.append("  " + gpu["caveat"])
    return "\n".join(lines)


def main(argv=None) -> int:
    started, load_before = time.time(), os.getloadavg()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, nargs="+", default=[1, 8, 64, 1024])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--tracking", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--steps", type=int, nargs=2, default=[25, 100], metavar=("T1", "T2"))
    p.add_argument("--gpu-check", default=str(GPU_CHECK), help="stored GPU rates (JSON)")
    p.add_argument("--out", help="write the JSON report to this file")
    args = p.parse_args(argv)
    every = WORKLOAD["eig_every"]
    if args.steps[0] >= args.steps[1] or any(t % every for t in args.steps):
        p.error(f"--steps: two increasing multiples of {every}")

    import jax

    jax.config.update("jax_enable_x64", True)
    from experiments.common import run_info

    rows = []
    for dtype in args.dtypes:
        for tracking in args.tracking:
            for runs in args.runs:
                eig = every if tracking == "on" else 0
                print(f"R = {runs}, {dtype}, tracking {tracking} ...", file=sys.stderr, flush=True)
                rows.append(measure(runs, dtype, eig, tuple(args.steps)))
    report = {
        "what": "bytes and flops per seed-step of the engine's compiled step program (XLA's "
        "estimate, CPU backend), a lower bound by hand, and the fraction of an H200's HBM "
        "bandwidth the stored GPU rates reach",
        "workload": {**WORKLOAD, "strategy": "one vmap over R runs, one device"},
        "loops": "cost_analysis() costs each while-loop body once (its totals are equal for "
        "the two step counts); per seed-step figures come from the optimised HLO with each loop "
        "body counted known_trip_count times, the difference of the two step counts divided by "
        "(T2 - T1)·R; walk_loops_once / xla_cost_analysis checks the costing",
        "rows": rows,
        "gpu": gpu_rows(rows, Path(args.gpu_check)) if Path(args.gpu_check).exists() else None,
        "run_info": run_info(started, load_before),
    }
    print(format_report(report))
    if args.out:
        from dynloss_jax.results import write_json

        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
