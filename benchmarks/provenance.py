"""Which numbers stated in the report are not in the stored results.

Every number the README and the documentation pages (``docs/*.md``: the report
``docs/reproduction.md`` and the site's other pages) state as a result should be traceable to a
file under ``docs/results/``. This module extracts the stated numbers, searches each among the
numbers of the stored outputs, and prints those it cannot find with file:line.

What counts as a stated number (rules applied per line, in this order):

* Skipped text: fenced code blocks (```` ``` ````), inline code spans (`` `…` ``), link targets
  (``](…)``), URLs, ``arXiv:…`` identifiers, and any number directly preceded by a section or
  figure marker (``§``, ``Fig.``, ``Figs.``, ``eq.``, ``Section``) or a software name
  (``Python``, ``jax``, ``jaxlib``, ``numpy``, ``optax``, ``flax``, ``CUDA``, ``version``).
  Dotted versions (``0.10.2``) are never numbers.
* Counted: every decimal (``0.953``, ``−0.947``, ``± 0.008``; a mantissa with a power of ten,
  ``3.8·10⁴``, is read as the product) and every number with a unit: ``%``, ``s``, ``ms``,
  ``µs``, ``min``, ``h``, ``×`` (before or after: ``×417``, ``2×``), ``GiB``/``MiB``/``kB``/
  ``GB``/``MB``. In a range ``a–b unit`` (or ``a … b unit``, ``a to b unit``) the unit also
  applies to ``a``.
* Not counted: integers without a unit. They are step indices, widths, seeds, amplitudes,
  periods and counts: settings, or exact values whose check needs the sentence's meaning.

How a stated number is matched: its magnitude (the sign is ignored, since "falls by 0.12" is
stored as −0.12) is found if some stored number rounds to it at the stated precision, i.e. lies
within half a unit of its last digit (0.953 matches 0.95327; 34.8 s matches 34.79; an integer
such as 33 s matches 32.5 … 33.5). A percentage also matches the fraction (12 % ↔ 0.12), a
time in minutes or hours also matches seconds (6.3 min ↔ 375 … 381 s), ms and µs also match
seconds, ms also microseconds (0.38 ms ↔ 376.7 µs), and a size in kB, MB, GB, MiB or GiB also
matches bytes (7.23 MB ↔ 7 232 742 bytes).

The stored numbers: every numeric value of every ``.json`` file under ``docs/results/`` (and
numbers inside its strings), and every number written in its ``.csv``, ``.txt``, ``.log`` and
``.md`` files, except hand-written notes (``README.md``) and this module's own table
(``PROVENANCE.md``). Binary arrays (``.npz``) are not read. The pool is large (tens of thousands
of values), so a two-digit number can match by chance: :func:`chance_rate` measures how often a
random number of each precision would, and the command prints it. A found number is therefore
evidence of nothing more than "some stored value rounds to it"; an unfound one is a real gap.

A stated number that is known not to be stored can be allowed with a reason in
:data:`ALLOWED` (file, the number as written, a piece of its line).

    python -m benchmarks.provenance [--files README.md docs/*.md] [--tables]
                                     [--results docs/results] [--folders]

``--tables`` checks only table rows (lines that start with ``|``); ``--folders`` prints, for
each folder of stored results, whether its commit, command and environment are recorded.
Exit status 1 when any number is not found (and not allowed).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the README and every page of the documentation site (docs/*.md; not docs/results/, which is data)
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
RESULTS = "docs/results"
TEXT_SUFFIXES = (".json", ".csv", ".txt", ".log", ".md")
NOT_STORED = ("README.md", "PROVENANCE.md")  # hand-written notes, this module's own table

# (file, number as written, a piece of its line) -> why it is allowed to be unstored
ALLOWED: dict[tuple[str, str, str], str] = {
    ("docs/reproduction.md", "0.89", "(η·λ1/2 = 0.89;"): (
        "derived: η·λ1/2 from the stored instability_lam = 1.782 at η = 1 "
        "(fig2_dynamics/summary.json)"
    ),
    ("docs/reproduction.md", "1.932", "in the run stored before"): (
        "the run replaced in e04c733; its summary is in the history "
        "(git show 4dee136:docs/results/fig2_dynamics/summary.json, instability_lam)"
    ),
    ("docs/reproduction.md", "0.075", "--eta 0.075 --amplitudes"): (
        "a setting in a command (η of Fig. 3b, SPEC §2), not a result"
    ),
    ("docs/reproduction.md", "0.075", "η other than 0.075"): (
        "a setting (η of Fig. 3b, SPEC §2), not a result"
    ),
    ("docs/reproduction.md", "1.16", "`delta_mean`/`delta_sem` is 1.16"): (
        "derived: the largest delta_mean/delta_sem of the dmse1 cells in "
        "sm_mse_family/dmse1_w32_summary.json (1.160) and dmse1_w61_summary.json (1.082)"
    ),
    ("README.md", "0.075", "(η = 0.075)"): (
        "a setting (η of the MSE family, the experiment module's default), not a result"
    ),
    ("docs/figures.md", "0.075", "(η = 0.075)"): (
        "a setting (η of the MSE family, the experiment module's default), not a result"
    ),
    ("docs/central_flow.md", "2.785", "RK4 is stable up to 2.785"): (
        "a property of the method: RK4's stability interval on the negative real axis"
    ),
    ("docs/reproduction.md", "2.785", "RK4's stability limit of 2.785"): (
        "a property of the method: RK4's stability interval on the negative real axis"
    ),
}

_MINUS = "\u2212"
_SUPER = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_UNITS = {
    "%": [1.0, 0.01],
    "s": [1.0],
    "ms": [1.0, 1e-3, 1e3],
    "µs": [1.0, 1e-6],
    "min": [1.0, 60.0],
    "h": [1.0, 3600.0],
    "×": [1.0],
    "GiB": [1.0, 2.0**30],
    "MiB": [1.0, 2.0**20],
    "GB": [1.0, 1e9],
    "MB": [1.0, 1e6],
    "kB": [1.0, 1e3],
}
_SKIP_BEFORE = re.compile(
    r"(?:§|\bFigs?\.|\beq\.|\bSection|\bPython|\bjax|\bjaxlib|\bnumpy|\boptax|\bflax|\bCUDA"
    r"|\bversion|\bv)\s*[≥<>=]*\s*$",
    re.IGNORECASE,
)
_COMPOUND = re.compile(r"(?<![\w.])(\d+) (min|h) (\d+) (s|min)(?![\w.])")
_TOKEN = re.compile(
    r"(?P<pre>×)?(?P<num>[-+\u2212]?\d+(?:\.\d+)?)"
    r"(?P<pow>\s?·\s?10(?P<exp>[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+))?"
    r"(?P<unit>×|\s?(?:%|µs|ms|min|GiB|MiB|GB|MB|kB|s|h)(?![\w.]))?"
)
_RANGE_TAIL = re.compile(
    r"^\s*(?:–|-|…|\.\.\.|to)\s*[-+\u2212]?\d+(?:\.\d+)?(×|\s?(?:%|µs|ms|min|GiB|MiB|GB|MB|kB|s|h)(?![\w.]))"
)


@dataclass(frozen=True)
class Stated:
    """A number stated in a document: where, as written, its value and what it may match."""

    file: str
    line: int
    text: str  # as written, with its unit
    value: float  # magnitude
    decimals: int  # digits after the point
    unit: str  # "" for a bare decimal
    context: str  # the line
    scope: tuple[str, ...] = ()  # entries of the results folder it names; () for all of them

    def candidates(self) -> list[tuple[float, float]]:
        """(value, half-width) intervals, one per reading of the unit."""
        half = 0.5 * 10.0 ** (-self.decimals)
        return [(self.value * f, half * f) for f in _UNITS.get(self.unit, [1.0])]


def _strip(line: str) -> str:
    """The line without code spans, link targets, URLs and arXiv identifiers (same length is not
    kept: only the numbers' text matters)."""
    line = re.sub(r"`[^`]*`", " ", line)
    line = re.sub(r"\]\([^)]*\)", "] ", line)
    line = re.sub(r"https?://\S+", " ", line)
    line = re.sub(r"arXiv:\s*\S+", " ", line, flags=re.IGNORECASE)
    line = re.sub(r"\b\d+(?:\.\d+){2,}\b", " ", line)  # dotted versions
    return re.sub(r"(?<=\d)[ \u2009\u202f](?=\d{3}(?!\d))", "", line)  # 35 000 -> 35000


def numbers_in_line(line: str) -> list[tuple[str, float, int, str]]:
    """The stated numbers of one line (rules in the module docstring): (text, magnitude,
    decimals, unit) each."""
    out = []
    text = _strip(line)
    for m in _COMPOUND.finditer(text):  # 9 min 31 s: one number, in the smaller unit
        big, small = int(m.group(1)), int(m.group(3))
        value = big * (60 if m.group(2) == "min" or m.group(4) == "min" else 3600) + small
        unit = "s" if m.group(4) == "s" else "min"
        out.append((m.group(0), float(value), 0, unit))
    text = _COMPOUND.sub(" ", text)
    for m in _TOKEN.finditer(text):
        start = m.start("num")
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._/"):
            continue  # part of a word, a name or a path
        end = m.end("num")
        if text[end : end + 1] == "." and text[end + 1 : end + 2].isdigit():
            continue
        if _SKIP_BEFORE.search(text[: m.start()]):
            continue
        raw = m.group("num").replace(_MINUS, "-")
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        value = abs(float(raw))
        unit = (m.group("unit") or "").strip()
        if m.group("pre"):
            unit = "×"
        if not unit:
            tail = _RANGE_TAIL.match(text[m.end() :])
            if tail:
                unit = tail.group(1).strip()
        if m.group("pow"):
            exp = int(m.group("exp").translate(_SUPER))
            value *= 10.0**exp
            decimals -= exp
        if "." not in raw and not m.group("pow") and not unit:
            continue  # a bare integer: not counted
        written = m.group(0).strip()
        out.append((written, value, decimals, unit))
    return out


_MENTION = re.compile(r"docs/results/([\w.-]+)|experiments\.(\w+)|benchmarks\.(\w+)")


def _mentions(line: str, entries: list[str]) -> list[str]:
    """Entries directly under the results folder that ``line`` names: ``docs/results/<entry>``,
    or a module ``experiments.<name>`` (every entry whose name starts with it) or
    ``benchmarks.<name>`` (the ``benchmarks`` entry)."""
    out = []
    for path, experiment, benchmark in _MENTION.findall(line):
        if path:
            out.append(path)
        elif experiment:
            out.extend(e for e in entries if e.startswith(experiment))
        elif benchmark and "benchmarks" in entries:
            out.append("benchmarks")
    return out


def stated_numbers(path: Path, *, root: Path = ROOT, tables_only: bool = False) -> list[Stated]:
    """Every stated number of a markdown file, outside fenced code blocks, each with its scope:
    the stored results it should be found in (see :func:`_scopes`)."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    top = root / RESULTS
    scopes = _scopes(lines, sorted(p.name for p in top.iterdir()) if top.is_dir() else [])
    found, fenced = [], False
    for i, line in enumerate(lines, start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or (tables_only and not line.lstrip().startswith("|")):
            continue
        for written, value, decimals, unit in numbers_in_line(line):
            scope = scopes[i - 1]
            found.append(Stated(rel, i, written, value, decimals, unit, line.strip(), scope))
    return found


def _scopes(lines: list[str], entries: list[str]) -> list[tuple[str, ...]]:
    """Per line, the entries directly under the results folder (``fig1_sharpness``,
    ``suite_timing.json``) that the text names as its source: those named on the line itself;
    else those named in its block (consecutive non-blank lines: a paragraph, a list, a table)
    together with those of the nearest earlier block of the same section (up to the previous
    heading) that names any; else none, which means all of them. A name is
    ``docs/results/<entry>``, ``experiments.<module>`` or ``benchmarks.<module>``
    (:func:`_mentions`)."""
    blocks, start, fenced, section = [], 0, False, 0
    for i, line in enumerate(lines + [""]):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = line.startswith("#") and not fenced
        if not line.strip() or heading:
            if i > start:
                blocks.append((start, i, section))
            start = i + 1
            section += heading
    per_line: list[tuple[str, ...]] = [()] * len(lines)
    carried: tuple[str, ...] = ()
    current = -1
    for a, b, sec in blocks:
        if sec != current:
            carried, current = (), sec  # a new section
        named = tuple(dict.fromkeys(m for ln in lines[a:b] for m in _mentions(ln, entries)))
        block = tuple(dict.fromkeys(named + carried))
        carried = named or carried
        for i in range(a, b):
            own = tuple(dict.fromkeys(_mentions(lines[i], entries)))
            per_line[i] = own or block
    return per_line


def _numbers_of_json(obj, out: list[float]) -> None:
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        if math.isfinite(obj):
            out.append(abs(float(obj)))
    elif isinstance(obj, str):
        out.extend(_numbers_of_text(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers_of_json(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_of_json(v, out)


_STORED_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _numbers_of_text(text: str) -> list[float]:
    out = []
    for m in _STORED_NUM.finditer(text):
        try:
            v = float(m.group(0))
        except ValueError:
            continue
        if math.isfinite(v):
            out.append(abs(v))
    return out


def stored_numbers(results: Path) -> list[float]:
    """The sorted magnitudes of every number stored under ``results`` (a folder, searched
    recursively, or one file; rules in the module docstring)."""
    values: list[float] = []
    paths = [results] if results.is_file() else sorted(results.rglob("*"))
    for path in paths:
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or path.name in NOT_STORED:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".json":
            try:
                _numbers_of_json(json.loads(text), values)
                continue
            except json.JSONDecodeError:
                pass
        values.extend(_numbers_of_text(text))
    return sorted(values)


def is_stored(number: Stated, stored: list[float]) -> bool:
    """Whether some stored value rounds to ``number`` (within half a unit of its last digit,
    under any reading of its unit; a relative 1e-9 of slack for the binary representation)."""
    for centre, half in number.candidates():
        slack = half + 1e-9 * max(centre, 1.0)
        i = bisect.bisect_left(stored, centre - slack)
        if i < len(stored) and stored[i] <= centre + slack:
            return True
    return False


def is_allowed(number: Stated) -> str | None:
    """The reason a known unstored number is allowed, or None."""
    for (file, written, piece), reason in ALLOWED.items():
        if file == number.file and written == number.text and piece in number.context:
            return reason
    return None


def unfound(
    files=DOCS, results=RESULTS, *, root: Path = ROOT, tables_only=False, scoped=True
) -> list[Stated]:
    """The stated numbers of ``files`` that no stored number matches and that :data:`ALLOWED`
    does not list, in file and line order. With ``scoped``, each is searched only in the stored
    results its text names as the source (:func:`_scopes`), else in all of ``results``."""
    pools: dict[tuple[str, ...], list[float]] = {}

    def pool(scope):
        if scope not in pools:
            top = root / results
            paths = [top / name for name in scope if (top / name).exists()] or [top]
            pools[scope] = sorted(v for p in paths for v in stored_numbers(p))
        return pools[scope]

    missing = []
    for name in files:
        for number in stated_numbers(root / name, root=root, tables_only=tables_only):
            stored = pool(number.scope if scoped else ())
            if not is_stored(number, stored) and is_allowed(number) is None:
                missing.append(number)
    return missing


def chance_rate(stored: list[float], decimals: int, lo=0.0, hi=1.0, n=2000) -> float:
    """The share of the numbers lo, lo + 10^−decimals, … (n of them evenly spaced over [lo, hi))
    that some stored value matches: how often a number of that precision is found by chance."""
    step = (hi - lo) / n
    hits = 0
    for i in range(n):
        v = round(lo + i * step, decimals)
        hits += is_stored(Stated("", 0, "", v, decimals, "", ""), stored)
    return hits / n


# --- which folders record their commit, command and environment -------------------------------

_COMMIT_KEYS = ("git_commit", "commit")
_COMMAND_KEYS = ("command", "argv")
_ENV_KEYS = ("environment", "versions", "jax")


def _scan(obj, keys: set, commits: set) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            keys.add(k)
            if k in _COMMIT_KEYS and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{7,40}", v):
                commits.add(v[:7])
            _scan(v, keys, commits)
    elif isinstance(obj, list):
        for v in obj:
            _scan(v, keys, commits)


def folder_provenance(results: Path, root: Path = ROOT) -> list[dict]:
    """For each folder under ``results`` that holds a result file: the commits its JSON files
    record (``git_commit`` or ``commit``, short form), whether they record a command and an
    environment (``environment``, ``versions`` or at least ``jax``), and the commit that first
    added the folder to the repository — an upper bound on the code that made the results, not
    the commit they ran at."""
    rows = []
    folders = sorted({p.parent for p in results.rglob("*") if p.is_file()})
    for folder in folders:
        keys: set = set()
        commits: set = set()
        for path in folder.glob("*.json"):
            try:
                _scan(json.loads(path.read_text()), keys, commits)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%h", "--reverse", "--", str(folder)],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.split()
        rows.append(
            dict(
                folder=str(folder.relative_to(root)),
                commits=sorted(commits),
                command=any(k in keys for k in _COMMAND_KEYS),
                environment=any(k in keys for k in _ENV_KEYS),
                first_added=added[0] if added else "",
            )
        )
    return rows


def folder_table(results: Path, root: Path = ROOT) -> str:
    """:func:`folder_provenance` as a markdown table."""
    yn = {True: "yes", False: "no"}
    out = [
        "| folder | commit recorded | command | environment | first committed in |",
        "|---|---|---|---|---|",
    ]
    for r in folder_provenance(results, root):
        commits = ", ".join(r["commits"]) or "**not recorded**"
        out.append(
            f"| `{r['folder']}` | {commits} | {yn[r['command']]} | {yn[r['environment']]} "
            f"| {r['first_added']} |"
        )
    return "\n".join(out)


FOLDERS_HEADER = """# Provenance of the stored results

Written by `python -m benchmarks.provenance --folders > docs/results/PROVENANCE.md`. For each
folder that holds stored results: the commits its JSON files record (`git_commit` or `commit`;
only files directly in the folder), whether they record the command and the environment
(`environment`, `versions`, or at least the jax version), and the commit that first added the
folder to the repository. That last commit bounds the code that made the results from above;
it is not the commit the run was made at, and where no commit is recorded none is known.

"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", nargs="+", default=list(DOCS))
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--tables", action="store_true", help="check table rows only")
    ap.add_argument("--folders", action="store_true", help="print each folder's provenance")
    ap.add_argument(
        "--unscoped", action="store_true", help="search every number in all stored results"
    )
    args = ap.parse_args(argv)
    root = Path.cwd()
    if args.folders:
        print(FOLDERS_HEADER + folder_table(root / args.results, root))
        return 0
    stored = stored_numbers(root / args.results)
    counted = sum(
        len(stated_numbers(root / f, root=root, tables_only=args.tables)) for f in args.files
    )
    missing = unfound(
        args.files, args.results, root=root, tables_only=args.tables, scoped=not args.unscoped
    )
    for s in missing:
        where = ", ".join(s.scope) if s.scope and not args.unscoped else "all"
        print(f"{s.file}:{s.line}: {s.text}  [searched: {where}]  | {s.context[:100]}")
    rates = ", ".join(f"{d} decimals {chance_rate(stored, d):.0%}" for d in (1, 2, 3))
    print(
        f"{len(missing)} of {counted} stated numbers not found (all {len(stored)} stored numbers "
        f"together would match a random number in [0, 1) by chance at {rates})",
        file=sys.stderr,
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
