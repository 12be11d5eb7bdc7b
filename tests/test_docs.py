"""The documentation site (docs/): it builds without warnings, its API reference covers the public
API, and every Python example in its pages runs.

Each page's ```python blocks run in order in one fresh namespace, in a temporary working
directory, as a reader would paste them. A block preceded by ``<!-- docs-test: skip (why) -->``
is not run (for a training of hours) and must say why; keep them rare (today there are none).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import metasolve as ms

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
SKIP = r"(?P<skip><!-- docs-test: skip(?P<why>[^>]*)-->\n)?"
BLOCK = re.compile(rf"^{SKIP}```python\n(?P<code>.*?)^```", re.S | re.M)


def pages() -> list[Path]:
    """The Markdown pages of the site that hold Python examples."""
    return sorted(path for path in DOCS.rglob("*.md")
                  if "_build" not in path.parts and "```python" in path.read_text())


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of every ```python block of ``path``, in order."""
    text = path.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code"))  # 0-based line of the code's first line
        why = match.group("why").strip(" ():") if match.group("skip") else None
        blocks.append((line, match.group("code"), why))
    return blocks


def test_blocks_are_read_in_order_with_their_skip_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip (trains for hours) -->\n"
                    "```python\ntrain()\n```\n\n```bash\nls\n```\n```python\ny = x\n```\n")
    blocks = python_blocks(page)
    assert [(code, why) for _, code, why in blocks] == [
        ("x = 1\n", None), ("train()\n", "trains for hours"), ("y = x\n", None)]
    assert [line for line, _, _ in blocks] == [3, 8, 15]  # 0-based lines of the code


def test_the_tutorials_are_found_and_hold_examples():
    names = {str(path.relative_to(DOCS)) for path in pages()}
    assert {"getting-started.md", "tutorials/gbms.md", "tutorials/autospec.md",
            "tutorials/r2n2.md", "tutorials/neural-scs.md", "tutorials/own-family.md"} <= names
    for path in pages():
        blocks = python_blocks(path)
        # The regular expression sees every fence the page opens.
        assert len(blocks) == path.read_text().count("```python"), path
        assert any(why is None for _, _, why in blocks), f"{path}: no example runs"
        for line, _, why in blocks:
            assert why is None or len(why) > 10, f"{path}:{line + 1}: a skip must say why"


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(DOCS)))
def test_every_python_example_of_a_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, code, why in python_blocks(page):
        if why is not None:
            continue
        # Padded so that a traceback names the page's own line numbers.
        exec(compile("\n" * line + code, str(page), "exec"), namespace)


def test_the_api_reference_documents_every_public_name():
    text = (DOCS / "api" / "metasolve.rst").read_text()
    documented = re.findall(r"^\.\. auto(?:class|function|data):: (\S+)$", text, re.M)
    assert sorted(documented) == sorted(ms.__all__)
    assert len(set(documented)) == len(documented)


def test_the_site_builds_without_warnings(tmp_path):
    for package in ("sphinx", "myst_parser"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed: pip install -e '.[docs]' (or '.[dev]')")
    result = subprocess.run([*BUILD, str(DOCS), str(tmp_path / "html"),
                             "-d", str(tmp_path / "doctrees")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    assert not result.stderr.strip(), result.stderr
    built = tmp_path / "html"
    for page in ("index", "getting-started", "tutorials/gbms", "tutorials/own-family",
                 "api/metasolve", "api/subpackages", "RESULTS"):
        assert (built / f"{page}.html").is_file(), page
    # Every public name has its entry, with its docstring's text.
    api = (built / "api" / "metasolve.html").read_text()
    missing = [name for name in ms.__all__ if f'id="metasolve.{name}"' not in api]
    assert not missing, missing
    assert "damping, overridable per instance" in api  # from Jacobi's docstring
