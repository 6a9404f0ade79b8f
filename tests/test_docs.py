"""The documentation site builds strictly, and every internal link of the built site resolves.

``mkdocs build --strict`` checks the links written in the markdown pages; the HTML it produces
also holds links it does not check (the API reference, the notebooks, the theme's navigation,
raw HTML). :func:`broken_links` reads every ``href`` and ``src`` of every built page and checks
that each internal one names a file of the built site (a folder: its ``index.html``) and, with a
``#fragment``, an element with that ``id`` there. Skipped where the ``docs`` extra is absent."""

import importlib.util
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers", "mkdocs_jupyter")


class _Refs(HTMLParser):
    """The ``href``/``src`` values and the ``id`` (and ``<a name>``) values of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.refs.append(value)
            elif name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)


def _target(site: Path, page: Path, ref: str) -> tuple[Path, str] | None:
    """The file of ``site`` that ``ref`` (written on ``page``) names, and its fragment; None for
    an external reference (a scheme, ``//host``, ``mailto:``, ``data:``)."""
    parts = urlsplit(ref)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        target = page
    elif path.startswith("/"):
        target = site / path.lstrip("/")
    else:
        target = page.parent / path
    target = target.resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, unquote(parts.fragment)


def broken_links(site: Path) -> list[str]:
    """Every internal ``href``/``src`` of the HTML pages under ``site`` that does not resolve,
    as ``"page -> reference (why)"``, sorted. A reference resolves when it names a file under
    ``site`` (a folder stands for its ``index.html``) and, if it has a fragment and names an HTML
    page, that page has an element with that ``id``."""
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    parsed: dict[Path, _Refs] = {}

    def refs_of(path: Path) -> _Refs:
        if path not in parsed:
            parser = _Refs()
            parser.feed(path.read_text(encoding="utf-8", errors="replace"))
            parsed[path] = parser
        return parsed[path]

    out = set()
    for page in pages:
        for ref in refs_of(page).refs:
            found = _target(site, page, ref)
            if found is None:
                continue
            target, fragment = found
            where = f"{page.relative_to(site)} -> {ref}"
            if not target.is_relative_to(site):
                out.add(f"{where} (outside the site)")
            elif not target.is_file():
                out.add(f"{where} (no such file)")
            elif fragment and target.suffix == ".html" and fragment not in refs_of(target).ids:
                out.add(f"{where} (no such anchor)")
    return sorted(out)


def test_the_checker_finds_planted_broken_links(tmp_path):
    """A small site with known links: the good ones pass, each planted broken one is reported."""
    site = tmp_path / "site"
    (site / "guide").mkdir(parents=True)
    (site / "img").mkdir()
    (site / "img" / "fig.png").write_bytes(b"png")
    (site / "index.html").write_text(
        '<a href="guide/">ok</a> <a href="guide/#usage">ok</a> <img src="img/fig.png">'
        '<a href="https://example.org/x">external</a> <a href="#top">ok</a> <h1 id="top"></h1>'
        '<a href="missing/">planted</a> <img src="img/gone.png">'
    )
    (site / "guide" / "index.html").write_text(
        '<h2 id="usage">Usage</h2> <a href="../index.html#top">ok</a> <a href="../">ok</a>'
        '<a href="../index.html#nowhere">planted</a> <a href="../../outside.html">planted</a>'
        '<a href="mailto:someone@example.org">external</a>'
    )
    assert broken_links(site) == [
        "guide/index.html -> ../../outside.html (outside the site)",
        "guide/index.html -> ../index.html#nowhere (no such anchor)",
        "index.html -> img/gone.png (no such file)",
        "index.html -> missing/ (no such file)",
    ]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    missing = [m for m in DOCS_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f'the docs extra is not installed (pip install -e ".[docs]"): {missing}')
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return site


def test_the_site_builds_strictly_with_every_page(built_site):
    # every markdown page of docs/ (not the stored results) and every notebook is a page
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    for stem in pages:
        html = built_site / ("index.html" if stem == "index" else f"{stem}/index.html")
        assert html.is_file(), stem
    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        assert (built_site / "notebooks" / nb.stem / "index.html").is_file(), nb.name
    assert not list(built_site.glob("results/**/*.json"))  # stored results are not pages
    api = (built_site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("Task", "run_sweep", "load_run", "SweepConfig", "writers", "shards", "flows"):
        assert f'id="dynloss_jax.{name}"' in api, name


def test_the_built_site_has_no_broken_internal_link(built_site):
    assert broken_links(built_site) == []
