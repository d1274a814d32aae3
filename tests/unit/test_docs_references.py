"""The documentation names code that exists (issue 15: docs that cannot go stale on paths).

docs/*.md and README.md point at the code: `services/workflow/orders.py: take_trigger`,
`jobs/maintenance.py`, and the code cites the docs' sections
(``docs/domain.md#state-machines``). A module moved or a function renamed
without the docs following is a failure here, not a surprise for a reader:

- every ``something.py`` a page names is a file of the repository (a path
  from the root, from ``dicom_node/`` or ``dicom_node/services/``, or the tail
  of one: ``workflow/work_items.py``, ``orders.py``);
- in a backticked ``module.py: name, other`` reference, each name is defined
  (a function, class or assignment) in that module;
- every ``<page>.md#<anchor>`` that the code, the tests or the docs cite is a
  heading of that page.

Pure: reads files only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
# where a doc's relative path may start (domain.md: "paths are under dicom_node/")
PREFIXES = ("", "dicom_node/", "dicom_node/services/")
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist"}
CITING_DIRS = ("dicom_node", "api", "tests", "docs")

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`]+)`")
# a .py name, possibly with directories; "<checkout>/bench/x.py" is a placeholder
PY_PATH = re.compile(r"(?<![\w./<>-])((?:[\w.-]+/)*[\w-]+\.py)\b")
# `module.py: name, other (details) -> more`: the names are those before "(", "->", ";"
NAMED = re.compile(r"((?:[\w.-]+/)*[\w-]+\.py):\s*([^(;]*?)\s*(?:\(|->|;|$)")
# the older spelling `services/orders.schedule_order`: a module path, a dot, a name
DOTTED = re.compile(
    r"(?<![\w./-])((?:dicom_node/)?(?:services|jobs|db|domain|scp|api)(?:/\w+)+)\.(\w+)\b"
)
NOT_A_NAME = {"py", "md", "toml", "json", "txt", "html", "dcm", "part", "pem"}
IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")
ANCHOR_CITE = re.compile(r"\b([a-z_]+)\.md#([a-z0-9-]+)")


@cache
def repository_py_files() -> frozenset[str]:
    found: set[str] = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if not SKIPPED_DIRS.intersection(relative.parts[:-1]):
            found.add(relative.as_posix())
    return frozenset(found)


def resolve(reference: str, files: Iterable[str]) -> list[str]:
    """The repository files a doc's ``.py`` reference can mean (empty: none)."""
    reference = reference.removeprefix("./")
    files = set(files)
    for prefix in PREFIXES:
        if prefix + reference in files:
            return [prefix + reference]
    return sorted(f for f in files if f.endswith("/" + reference))


@cache
def defined_names(relative: str) -> frozenset[str]:
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _without_fences(text: str) -> str:
    """Fenced blocks blanked out, line numbers kept."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def stale_paths(name: str, text: str, files: Iterable[str]) -> Iterator[str]:
    files = frozenset(files)
    for match in PY_PATH.finditer(text):
        if not resolve(match.group(1), files):
            yield f"{name}:{_line_of(text, match.start())}: no file {match.group(1)}"
    for match in DOTTED.finditer(text):
        module, attribute = match.groups()
        if attribute in NOT_A_NAME:
            continue
        found = resolve(module + ".py", files)
        if not found or not any(attribute in defined_names(f) for f in found):
            yield f"{name}:{_line_of(text, match.start())}: no {module}.py defining {attribute}"


def stale_names(
    name: str,
    text: str,
    files: Iterable[str],
    names_of: Callable[[str], frozenset[str]] = defined_names,
) -> Iterator[str]:
    """``module.py: name`` references (in inline code, outside fenced blocks)
    whose name the module does not define."""
    files = frozenset(files)
    body = _without_fences(text)
    for span in INLINE_CODE.finditer(body):
        code = " ".join(span.group(1).split())  # a span may wrap across lines
        for ref in NAMED.finditer(code):
            candidates = resolve(ref.group(1), files)
            if not candidates:
                continue  # stale_paths reports it
            for identifier in IDENTIFIER.findall(ref.group(2)):
                first = identifier.split(".")[0]
                if not any(first in names_of(c) for c in candidates):
                    yield (
                        f"{name}:{_line_of(body, span.start())}: {ref.group(1)} defines no "
                        f"{first} ({', '.join(candidates)})"
                    )


def anchors_of(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered."""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", _without_fences(markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _citing_files() -> Iterator[Path]:
    for directory in CITING_DIRS:
        for path in (ROOT / directory).rglob("*"):
            if path.suffix in {".py", ".md"} and "__pycache__" not in path.parts:
                yield path
    yield ROOT / "README.md"


def missing_anchors() -> list[str]:
    problems = []
    for path in _citing_files():
        text = path.read_text(encoding="utf-8")
        for match in ANCHOR_CITE.finditer(text):
            page, anchor = match.groups()
            target = ROOT / "README.md" if page == "README" else DOCS / f"{page}.md"
            if not target.exists():
                continue  # another project's page (e.g. a standard's), not ours
            if anchor not in anchors_of(target.read_text(encoding="utf-8")):
                where = f"{path.relative_to(ROOT)}:{_line_of(text, match.start())}"
                problems.append(f"{where}: {page}.md has no #{anchor}")
    return problems


# --------------------------------------------------------------------------- the docs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_py_path_a_page_names_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = list(stale_paths(page.name, text, repository_py_files()))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_and_name_reference_is_defined_there(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = list(stale_names(page.name, text, repository_py_files()))
    assert not problems, "\n".join(problems)


def test_every_cited_docs_anchor_exists() -> None:
    problems = missing_anchors()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_fence_is_closed(page: Path) -> None:
    """A stray fence turns the rest of a page into code, headings and anchors included."""
    fences = re.findall(r"^```", page.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(fences) % 2 == 0, f"{page.name}: {len(fences)} code fences, one is not closed"


def test_the_code_cites_domain_md() -> None:
    """The anchor check has something to check: the code does cite the rules page."""
    cited = {
        m.group(2)
        for path in _citing_files()
        if path.suffix == ".py"
        for m in ANCHOR_CITE.finditer(path.read_text(encoding="utf-8"))
        if m.group(1) == "domain"
    }
    assert {"state-machines", "worklist-item-states", "stale-orders"} <= cited


# --------------------------------------------------------------------------- the checks can fail

FILES = frozenset({"dicom_node/services/workflow/orders.py", "bench/ingest.py"})


def test_a_planted_stale_path_is_found() -> None:
    text = "Moved: `services/worklist.py: close_items` and dicom_node/services/reports.py.\n"
    assert list(stale_paths("x.md", text, FILES)) == [
        "x.md:1: no file services/worklist.py",
        "x.md:1: no file dicom_node/services/reports.py",
    ]


def test_a_planted_stale_dotted_reference_is_found() -> None:
    text = "Checked by `services/retrieve.retrieve_match`.\n"
    assert list(stale_paths("x.md", text, FILES)) == [
        "x.md:1: no services/retrieve.py defining retrieve_match"
    ]


def test_known_paths_in_their_accepted_forms_pass() -> None:
    text = (
        "`services/workflow/orders.py`, `dicom_node/services/workflow/orders.py`, "
        "`workflow/orders.py`, `orders.py` and `bench/ingest.py`; "
        "placeholder `<checkout>/bench/query.py`\n"
    )
    assert list(stale_paths("x.md", text, FILES)) == []


def test_a_planted_stale_name_is_found_even_across_a_line_break() -> None:
    def names(relative: str) -> frozenset[str]:
        return frozenset({"take_trigger", "advance_order"})

    text = (
        "Intro.\n"
        "(`services/workflow/orders.py: take_trigger, _visible_to` (details),\n"
        "`workflow/orders.py:\nadvance_order` -> `x.py: nothing`)\n"
        "```\norders.py: not_checked_in_a_fenced_block\n```\n"
    )
    assert list(stale_names("x.md", text, FILES, names)) == [
        "x.md:2: services/workflow/orders.py defines no _visible_to "
        "(dicom_node/services/workflow/orders.py)"
    ]


def test_anchors_follow_github_rules() -> None:
    page = (
        "# T\n## Audit events (PS3.15 A.5)\n### Escalation\n"
        "```\n# not a heading\n```\n### Escalation\n"
    )
    assert anchors_of(page) == {"t", "audit-events-ps315-a5", "escalation", "escalation-1"}
