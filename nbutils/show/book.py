"""The run as a book: ``runs/<run>/book/``, a static site (MkDocs, its Material theme and mkdocs-jupyter)
of the README, every page and image of ``docs/``, one run's report with its figures and the run's
executed notebooks with their outputs (rendered, never executed). It opens from ``file://`` with nothing
fetched from the network: no fonts, no search worker, no MathJax or widget scripts from a CDN."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from nbutils.store.files import REPO_ROOT, atomic_path

IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
# [text](target "title") and ![alt](target); src="..." and href="..." in the Markdown's raw HTML
MD_LINK = re.compile(r'(!?)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?((?:\s+"[^"]*")?)\s*\)')
HTML_LINK = re.compile(r'\b(src|href)="([^"]*)"')
FENCE = re.compile(r"(^```.*?^```[ \t]*$)", re.M | re.S)
NO_SCRIPT = "data:text/javascript,"  # nbconvert's MathJax <script> loads this (nothing) instead of a CDN's


class BookError(RuntimeError):
    """The book cannot be built as things are; says which file and link, and what to do."""


def title(markdown: str, fallback: str) -> str:
    """A page's title: its first ``# `` heading."""
    found = re.search(r"^# +(.+?)\s*#*\s*$", markdown, re.M)
    return found.group(1).strip() if found else fallback


def site_path(repo_file: Path, repo: Path) -> str | None:
    """Where a repository file lives in the site (``README.md`` → ``index.md``, ``docs/x`` → ``x``);
    None: it has no page (code, recipes, notebooks without outputs: the site is not the repository)."""
    if repo_file == repo / "README.md":
        return "index.md"
    if repo_file.is_relative_to(repo / "docs"):
        return repo_file.relative_to(repo / "docs").as_posix()
    if repo_file.suffix.lower() in IMAGES:
        return f"files/{repo_file.relative_to(repo).as_posix()}"
    return None


def rewrite_links(text: str, source: Path, repo: Path, copies: set[Path], problems: list[str]) -> str:
    """``source``'s relative links as the site has them; a link to a repository file without a page
    becomes its path as code. Images it shows outside docs/ are added to ``copies``, links to no
    file to ``problems``."""
    here = os.path.dirname(site_path(source, repo))

    def target(link: str) -> str | None:
        url, hash_, fragment = link.partition("#")
        if not url or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|/", url):  # #anchor, http:, mailto:, /absolute
            return link
        path = Path(os.path.normpath(source.parent / url))
        if not path.exists() or not path.is_relative_to(repo):
            problems.append(f"{source.relative_to(repo)}: {link}")
            return link
        if path.suffix.lower() in IMAGES and not path.is_relative_to(repo / "docs"):
            copies.add(path)
        moved = site_path(path, repo)
        return None if moved is None else os.path.relpath(moved, here or ".") + hash_ + fragment

    def markdown_link(m: re.Match) -> str:
        bang, label, link, quoted = m.groups()
        new = target(link)
        if new is not None:
            return f"{bang}[{label}]({new}{quoted})"
        path = os.path.normpath(os.path.join(os.path.dirname(source.relative_to(repo)), link.split("#")[0]))
        return label if path in label else f"{label} (`{path}`)"

    def html_link(m: re.Match) -> str:
        new = target(m.group(2))
        return f'{m.group(1)}="{new}"' if new is not None else f'title="{html.escape(m.group(2))}"'

    parts = FENCE.split(text)  # links inside fenced code stay as written
    return "".join(p if i % 2 else HTML_LINK.sub(html_link, MD_LINK.sub(markdown_link, p)) for i, p in enumerate(parts))


def report_page(run_dir: Path, pages: Path) -> str:
    """``report.html``'s content as a Markdown page (one raw-HTML block) with its figures copied beside it:
    its links to ``<stage>.html`` are the notebooks' pages, which sit where the run has its notebooks."""
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    rules = [re.fullmatch(r"\s*([^{]+?)\s*\{(.*)\}\s*", line) for line in style.splitlines()]
    style = "\n".join(f"{', '.join('.run-report ' + sel.strip() for sel in m.group(1).split(','))} {{{m.group(2)}}}"
                      for m in rules if m and m.group(1) not in ("body", "header", "nav", "main"))  # its own only
    style += "\n.run-report .table { display: block; overflow-x: auto; font-size: .64rem; }"  # Material's table size
    body = re.search(r"<body>(.*)</body>", page, re.S).group(1)
    body = re.sub(r"<header>\s*<h1>.*?</h1>", "<header>", body, flags=re.S)  # the page has its own title
    for src in set(re.findall(r'<img [^>]*src="([^"]+)"', body)):
        figure = run_dir / src
        if not figure.is_file():
            raise BookError(f"{run_dir / 'report.html'} shows {src!r}, which is not in the run folder: "
                            f"rewrite the report (python -m nbutils report -f <the run's recipe>)")
        (pages / "run" / src).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(figure, pages / "run" / src)
    return (f"---\nhide: [toc]\n---\n\n# Report of run `{run_dir.name}`\n\n<style>{style}</style>\n\n"
            f"<div class=\"run-report\">\n{body}\n</div>\n")


def copy_notebook(notebook: Path, target: Path) -> None:
    """The executed notebook without its widget state (whose scripts would come from a CDN; the
    outputs keep their text form, e.g. a progress bar's last line)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(nb), encoding="utf-8")


def folder_title(run_dir: Path, notebook: Path) -> str:
    """The nav section of an executed notebook: ``Iteration 1``, ``Evaluation``, ``Length analysis``."""
    label = re.sub(r"^iter_(\d+)$", r"Iteration \1", notebook.parent.relative_to(run_dir).as_posix()).replace("_", " ")
    return label[:1].upper() + label[1:]


def readme_order(readme: str, page: str) -> tuple[int, str]:
    """Docs pages in the order of the README's Documentation list (else where it first links them), then
    the others by name."""
    listed = readme.find("## Documentation")
    at = readme.find(f"docs/{page}", max(listed, 0))
    at = at if at >= 0 else readme.find(f"docs/{page}")
    return (at if at >= 0 else len(readme), page)


def assemble(run_dir: Path, notebooks: list[Path], src: Path, repo: Path = REPO_ROOT) -> Path:
    """Write the site's sources under ``src`` (``pages/`` and ``mkdocs.yml``); return the config file."""
    pages, copies, problems = src / "pages", set(), []
    readme = (repo / "README.md").read_text(encoding="utf-8")
    pages.mkdir(parents=True)
    (pages / "index.md").write_text(rewrite_links(readme, repo / "README.md", repo, copies, problems), encoding="utf-8")
    docs = []
    for path in sorted((repo / "docs").rglob("*")) if (repo / "docs").is_dir() else []:
        target = pages / path.relative_to(repo / "docs")
        if path.suffix == ".md":
            text = path.read_text(encoding="utf-8")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rewrite_links(text, path, repo, copies, problems), encoding="utf-8")
            docs.append({title(text, path.stem): path.relative_to(repo / "docs").as_posix()})
        elif path.is_file():  # images, and whatever else a page may link to
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    if problems:
        raise BookError("links to no file of the repository (fix each in its file; the book takes README.md and "
                        "docs/ as they are):\n  " + "\n  ".join(problems))
    for image in copies:
        (pages / site_path(image, repo)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, pages / site_path(image, repo))
    (pages / "run").mkdir(exist_ok=True)
    (pages / "run" / "report.md").write_text(report_page(run_dir, pages), encoding="utf-8")
    sections: dict[str, list[str]] = {}  # a section per folder (Iteration 1, ..., Evaluation), in the run's order
    for nb in notebooks:
        copy_notebook(nb, pages / "run" / nb.relative_to(run_dir))
        sections.setdefault(folder_title(run_dir, nb), []).append(f"run/{nb.relative_to(run_dir).as_posix()}")
    run_nav = [{"Report": "run/report.md"}, *({name: pages_} for name, pages_ in sections.items())]  # h1s title them
    config = {
        "site_name": title(readme, "Workbook"), "docs_dir": "pages", "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections"]},
        # no search: Material's search runs in a web worker, which a page from file:// may not start
        "plugins": [{"mkdocs-jupyter": {"include": ["*.ipynb"], "execute": False, "include_requirejs": False,
                                        "custom_mathjax_url": NO_SCRIPT, "cache": False}}],
        "markdown_extensions": ["tables", "attr_list", "md_in_html", "admonition", {"toc": {"permalink": True}},
                                "pymdownx.superfences"],
        "validation": {"omitted_files": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
                       "anchors": "info"},
        "nav": [{"Home": "index.md"}, *sorted(docs, key=lambda d: readme_order(readme, *d.values())),
                {f"The run: {run_dir.name}": run_nav}],
    }
    (pages / "book.css").write_text(".md-grid { max-width: 96rem; }\n")  # notebook code is wide: a wider page
    config["extra_css"] = ["book.css"]
    (src / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return src / "mkdocs.yml"


def build_book(run_dir: Path, notebooks: list[Path], repo: Path = REPO_ROOT) -> Path:
    """Build ``run_dir/book/`` (``mkdocs build --strict``: a broken link fails it) in a temporary folder
    beside it, renamed over the old book when it has built; return it."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "report.html").is_file():
        raise BookError(f"{run_dir}: no report.html: finish the run first (python -m nbutils run -f <recipe>)")
    with atomic_path(run_dir / "book") as site:
        config = assemble(run_dir, notebooks, site.parent / "src", repo)
        proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(config),
                               "-d", str(site)], capture_output=True, text=True, cwd=site.parent)
        if proc.returncode:
            raise BookError(build_failure(proc.stdout + proc.stderr))
        for served_only in ("404.html", "sitemap.xml", "sitemap.xml.gz"):  # absolute URLs: for a web server
            (site / served_only).unlink(missing_ok=True)
    return run_dir / "book"


def build_failure(log: str) -> str:
    """mkdocs's warnings, with the site's pages named as the repository's files they come from."""
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))] or log.splitlines()[-5:]
    source = {"index.md": "README.md"}
    named = [re.sub(r"'(?!run/)([^']+\.md)'", lambda m: f"'{source.get(m.group(1), 'docs/' + m.group(1))}'", line)
             for line in warnings]
    return ("mkdocs build --strict failed; fix these in README.md or docs/ (the book's pages are those files, "
            "their links rewritten to the site's):\n  " + "\n  ".join(named))
