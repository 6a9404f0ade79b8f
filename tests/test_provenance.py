"""The provenance check: stated numbers that no stored result holds are reported."""

import json

from benchmarks import provenance


def _fixture(tmp_path):
    exp = tmp_path / "docs" / "results" / "exp"
    other = tmp_path / "docs" / "results" / "other"
    exp.mkdir(parents=True)
    other.mkdir(parents=True)
    (exp / "summary.json").write_text(
        json.dumps({"acc": [0.95327, 0.0121], "runtime_s": 34.79, "share": 0.12, "note": "x 2.5e3"})
    )
    (exp / "log.txt").write_text("step 100 loss 1.23456\n")
    (other / "summary.json").write_text(json.dumps({"only_here": 0.4444}))
    (exp / "README.md").write_text("hand-written: 0.777\n")  # notes are not stored results
    doc = tmp_path / "doc.md"
    doc.write_text(
        "\n".join(
            [
                "# Results",
                "",
                "Accuracy 0.953 ± 0.012 (`docs/results/exp/`), 34.8 s, 12 %, 2.5·10³ steps.",
                "The log says 1.2346; 6.3 min is not stored; Python 3.11, Fig. 4: no numbers.",
                "A planted number 0.777 and an integer 1234 (not counted).",
                "",
                "```bash",
                "python -m x --eta 0.123",
                "```",
                "",
                "| a | b |",
                "|---|---|",
                "| 33 s | 0.4444 |",
                "",
                "## Elsewhere",
                "",
                "Unscoped: 0.4444 is found in some stored folder.",
            ]
        )
        + "\n"
    )
    return doc


def test_planted_unstored_number_is_reported_and_stored_ones_are_not(tmp_path):
    _fixture(tmp_path)
    missing = provenance.unfound(["doc.md"], "docs/results", root=tmp_path)
    got = [(m.line, m.text) for m in missing]
    # 0.953 ↔ 0.95327, 0.012 ↔ 0.0121, 34.8 s ↔ 34.79, 12 % ↔ 0.12, 2.5·10³ ↔ 2.5e3 (a string),
    # 1.2346 ↔ 1.23456 (a text file) are found; 6.3 min (378 s) and the planted 0.777 (only in a
    # README) are not; 33 s does not round 34.79; 0.4444 is stored, but not in the folder the
    # table's paragraph names (exp), so there it is reported, and found where no folder is named
    assert got == [(4, "6.3 min"), (5, "0.777"), (13, "33 s"), (13, "0.4444")]
    assert provenance.unfound(["doc.md"], "docs/results", root=tmp_path, tables_only=True) == [
        m for m in missing if m.line == 13
    ]
    unscoped = provenance.unfound(["doc.md"], "docs/results", root=tmp_path, scoped=False)
    assert [(m.line, m.text) for m in unscoped] == [(4, "6.3 min"), (5, "0.777"), (13, "33 s")]


def test_what_counts_as_a_stated_number():
    line = (
        "λ1 = −0.947 ± 0.008 at 83–100 % over 9 min 31 s, ×417 and 2× faster, 3.8·10⁴, "
        "`--eta 0.5`, [link](docs/x_0.25.md), arXiv:2410.10690, jax 0.10.2, Python 3.11, "
        "§2.3, 35 000 steps, width 100, 1e-5"
    )
    got = [(t, v, d, u) for t, v, d, u in provenance.numbers_in_line(line)]
    assert got == [
        ("9 min 31 s", 571.0, 0, "s"),
        ("−0.947", 0.947, 3, ""),
        ("0.008", 0.008, 3, ""),
        ("83", 83.0, 0, "%"),
        ("100 %", 100.0, 0, "%"),
        ("×417", 417.0, 0, "×"),
        ("2×", 2.0, 0, "×"),
        ("3.8·10⁴", 38000.0, -3, ""),
    ]


def test_the_reproduction_tables_are_all_stored():
    """Every number in the tables of docs/reproduction.md is in docs/results (or allowed with
    its reason in ``provenance.ALLOWED``)."""
    missing = provenance.unfound(["docs/reproduction.md"], tables_only=True)
    assert [f"{m.file}:{m.line}: {m.text}" for m in missing] == []


def test_sizes_match_bytes_and_milliseconds_match_microseconds(tmp_path):
    exp = tmp_path / "docs" / "results" / "exp"
    exp.mkdir(parents=True)
    (exp / "b.json").write_text(json.dumps({"bytes": 7232741, "us_per_step": 376.67}))
    doc = tmp_path / "doc.md"
    doc.write_text("Moves 7.23 MB (not 7.3 MB) in 0.38 ms (not 0.40 ms) a step.\n")
    missing = provenance.unfound(["doc.md"], "docs/results", root=tmp_path)
    assert [m.text for m in missing] == ["7.3 MB", "0.40 ms"]
