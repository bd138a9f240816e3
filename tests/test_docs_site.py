"""The docs site (issue #19): docs/ built by the real mdBook, as CI builds
it, with any warning failing the build; every page of docs/ in the book's
summary; and every link between pages leading somewhere in the site."""
import pathlib
import re
import subprocess
import urllib.parse

from helpers import ROOT, VENV

DOCS = ROOT / "docs"


def test_every_page_is_in_the_summary():
    summary = (DOCS / "SUMMARY.md").read_text()
    listed = set(re.findall(r"\]\(([^)#]+)\)", summary))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")} - {"SUMMARY.md"}
    assert pages - listed == set(), "pages missing from docs/SUMMARY.md"
    assert listed - pages == set(), "the summary names pages that are not there"


def test_the_site_builds_without_a_warning_and_its_links_hold(tmp_path):
    out = tmp_path / "book"
    p = subprocess.run([str(VENV / "bin" / "mdbook"), "build", str(DOCS), "-d", str(out)],
                       capture_output=True, text=True, timeout=120)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log
    # mdBook has no switch to make warnings fatal: the test does it.
    assert not re.search(r"\b(WARN|ERROR)\b", log), log
    assert "Getting started" in (out / "index.html").read_text()
    assert "--http-socket" in (out / "options.html").read_text()
    broken = []
    for page in out.rglob("*.html"):
        if page.name in ("print.html", "404.html", "toc.html"):
            continue  # mdBook's own, with links rewritten for any depth
        for href in re.findall(r'href="([^"#]*)(?:#[^"]*)?"', page.read_text()):
            if not href or re.match(r"^[a-z]+:", href) or href.startswith("//"):
                continue
            if not (page.parent / urllib.parse.unquote(href)).resolve().exists():
                broken.append(f"{page.relative_to(out)} -> {href}")
    assert broken == [], broken
