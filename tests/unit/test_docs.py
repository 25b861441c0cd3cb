"""The README and docs/ stay true to the tree: excerpts equal the example DAGs, links lead somewhere."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MAX_README_LINES = 250

# <!-- excerpt: example_dags/<file>.py howto_<name> --> followed by a ```python block.
EXCERPT = re.compile(
    r"^<!-- excerpt: (?P<path>\S+) (?P<name>howto_\w+) -->\n+```python\n(?P<block>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
EXCERPT_COMMENT = re.compile(r"^<!-- excerpt:", re.MULTILINE)
# [text](target): inline links and images; the target up to a space, a `#` or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s#]*)(?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\)")


def marked_lines(path: Path, name: str) -> str:
    """The lines between ``# [START name]`` and ``# [END name]`` in ``path``, dedented."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [START {name}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [END {name}]"]
    assert len(starts) == 1, f"{path.relative_to(ROOT)}: expected one '# [START {name}]', found {len(starts)}"
    assert len(ends) == 1, f"{path.relative_to(ROOT)}: expected one '# [END {name}]', found {len(ends)}"
    assert starts[0] < ends[0], f"{path.relative_to(ROOT)}: '# [END {name}]' comes before its START"
    return textwrap.dedent("".join(lines[starts[0] + 1 : ends[0]]))


def excerpts() -> list[tuple[Path, str, str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        matches = list(EXCERPT.finditer(text))
        assert len(matches) == len(EXCERPT_COMMENT.findall(text)), (
            f"{page.relative_to(ROOT)}: every '<!-- excerpt: ... -->' must be followed by a ```python block"
        )
        found += [(page, m["path"], m["name"], m["block"]) for m in matches]
    return found


EXCERPTS = excerpts()


def test_docs_hold_excerpts():
    assert {page.relative_to(DOCS).as_posix() for page, *_ in EXCERPTS} >= {
        "operators/build.md",
        "operators/submit.md",
        "operators/results.md",
        "sensors/batch.md",
    }


@pytest.mark.parametrize(
    ("page", "source", "name", "block"),
    EXCERPTS,
    ids=[f"{page.relative_to(DOCS).as_posix()}:{name}" for page, _, name, _ in EXCERPTS],
)
def test_an_excerpt_equals_the_lines_between_its_markers(page, source, name, block):
    path = ROOT / source
    assert path.is_file(), f"{page.relative_to(ROOT)}: {source} does not exist"
    expected = marked_lines(path, name)
    assert block == expected, f"{page.relative_to(ROOT)}: replace the excerpt {name} with\n{expected}"


def relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # code blocks hold no links
    targets = [m["target"] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


LINKED = [README, ROOT / "benchmarks" / "README.md", *PAGES]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file(path):
    missing = [t for t in relative_links(path) if not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: links to missing files: {missing}"


def test_the_readme_fits_on_a_screen_or_so():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, f"README.md has {count} lines; keep it to {MAX_README_LINES} (the rest: docs/)"
