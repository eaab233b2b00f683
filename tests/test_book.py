"""The run as a book (``python -m nbutils book``, ``make book``): a static site of README.md, docs/ and a
run's report and executed notebooks that opens offline from file:// with every page, image and link whole."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from nbutils.show.book import BookError, assemble
from nbutils.store.files import REPO_ROOT
from tests.conftest import chromium, cli
from tests.test_length_analysis import open_page


def test_links_become_the_sites_and_a_link_to_nothing_names_its_file(tmp_path):
    """docs/x.md → x.md, README.md → index.md, a repository file without a page → its path as code; a link
    to no file stops the build before mkdocs runs, naming each file and link."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "nbutils").mkdir()
    (repo / "nbutils" / "chat.py").write_text("")
    (repo / "docs" / "fig.png").write_bytes(b"")
    (repo / "docs" / "a.md").write_text("# A page\n\n[home](../README.md#top) and [the code](../nbutils/chat.py)\n")
    readme = ("# Title\n\n[a](docs/a.md#s) ![f](docs/fig.png) <img src=\"docs/fig.png\"> "
              "[`nbutils/chat.py`](nbutils/chat.py)\n")
    (repo / "README.md").write_text(readme + "```\n[not a link](nowhere.md)\n```\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.html").write_text("<html><style>\n</style><body><main></main></body></html>")
    config = assemble(run, [], tmp_path / "src", repo)
    pages = config.parent / "pages"
    assert (pages / "index.md").read_text().startswith(
        "# Title\n\n[a](a.md#s) ![f](fig.png) <img src=\"fig.png\"> `nbutils/chat.py`\n```\n[not a link](nowhere.md)")
    assert (pages / "a.md").read_text().endswith("[home](index.md#top) and the code (`nbutils/chat.py`)\n")
    assert "- A page: a.md" in config.read_text()

    (repo / "docs" / "a.md").write_text("# A\n\n[gone](gone.md)\n")
    (repo / "README.md").write_text(readme + '<img src="docs/missing.png">\n')
    with pytest.raises(BookError) as e:
        assemble(run, [], tmp_path / "src2", repo)
    assert "README.md: docs/missing.png" in str(e.value) and "docs/a.md: gone.md" in str(e.value)


# what a page shows: its images (src, natural width), links, the nav's links, its text, its notebook outputs
SEEN = """[Array.from(document.images).map(i => [i.src.slice(0, 100), i.naturalWidth]),
           Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
           Array.from(document.querySelectorAll('.md-nav a[href]')).map(a => a.href),
           document.body.innerText, document.querySelectorAll('.jp-OutputArea-output').length]"""


@pytest.mark.slow
def test_the_book_opens_offline_with_every_page_image_and_link(loop):
    """``python -m nbutils book`` on the tiny loop, then every page of the site in headless Chromium from file://
    with no network: no console or page errors, no failed request, every image shown, every link to a file."""
    from playwright.sync_api import sync_playwright

    printed = cli("book", "--run", str(loop)).stdout.strip()
    site = loop / "book"
    assert printed == str(site / "index.html")
    pages = sorted(site.rglob("*.html"))
    notebooks = sorted(p.relative_to(loop).with_suffix(".html") for p in loop.glob("*/*.ipynb"))
    assert len(notebooks) == 8  # 3 per iteration, 04, 05
    expected = {Path("index.html"), Path("run/report.html"), *(Path("run") / nb for nb in notebooks)}
    assert expected - {p.relative_to(site) for p in pages} == set(), "pages missing"
    found, shown = {}, {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), proxy={"server": "http://127.0.0.1:9"}, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])  # a dead proxy: anything fetched from the network fails
        page, problems = open_page(browser, pages[0])  # then the same tab, its listeners, page after page
        for path in pages:
            seen = len(problems)
            if path != pages[0]:
                page.goto(path.as_uri(), wait_until="load")
            images, links, nav, text, outputs = page.evaluate(SEEN)
            # net::ERR_ABORTED: a request of the page before (its favicon) cut short by this navigation
            found[path] = [issue for issue in problems[seen:] if not issue.endswith("net::ERR_ABORTED")]
            found[path] += [f"image {src} not shown" for src, width in images if not width]
            found[path] += [f"link to {link}, no such file" for link in links if link.startswith("file:")
                            and not Path(unquote(urlparse(link).path)).exists()]
            shown[path] = (images, nav, text, outputs)
        browser.close()
    bad = {path.relative_to(site).as_posix(): issues for path, issues in found.items() if issues}
    assert not bad, "\n".join(f"{name}: {'; '.join(issues)}" for name, issues in bad.items())
    index_images, nav, _, _ = shown[site / "index.html"]
    assert len(index_images) == len(re.findall(r"<img |!\[", (REPO_ROOT / "README.md").read_text()))  # its figures
    docs = [p.relative_to(REPO_ROOT / "docs").with_suffix(".html") for p in (REPO_ROOT / "docs").rglob("*.md")]
    assert {(site / d).as_uri() for d in docs} <= set(nav), "the nav lists every docs page"
    assert {(site / "run" / nb).as_uri() for nb in notebooks} | {(site / "run/report.html").as_uri()} <= set(nav)
    report_images, _, report_text, _ = shown[site / "run/report.html"]
    assert len(report_images) >= 10 and "Iteration 2" in report_text  # the report's figures, inline
    for nb in notebooks:  # the executed outputs, a figure among them inline (a data: URI), under its title
        images, _, text, outputs = shown[site / "run" / nb]
        assert any(src.startswith("data:image/png") for src, _ in images) and outputs >= 3 and " · " in text, nb
