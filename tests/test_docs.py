"""The documentation works: README.md stays short, its and docs/*.md's relative links point to
files that exist (and to headings that exist, where they name one), and every code block marked
runnable runs.

Convention: a fenced block opened with ```python on the line right after a line
`<!-- runnable -->` is runnable. Each runs in a fresh process of this Python, on the CPU with
the reference backend, in a temporary working directory, under a timeout; a failure names the
block's file and line. Mark only snippets that finish in seconds."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README] + sorted((ROOT / "docs").glob("*.md"))
MARKER = "<!-- runnable -->"
README_MAX_LINES = 200
TIMEOUT_S = 300  # a block takes seconds; the margin is for a loaded 2-core CI machine

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


def _relative(path):
    return path.relative_to(ROOT).as_posix()


def parse(text, name="<text>"):
    """(runnable blocks, prose lines) of markdown `text`. A runnable block is (name, line, code),
    line the 1-based line of its opening fence. Raises ValueError for a marker that is not
    followed by a ```python fence, or a fence that is never closed."""
    lines = text.splitlines()
    blocks, prose = [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if line.strip() == MARKER:
            opening = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if not opening or opening.group(3).strip() != "python":
                raise ValueError(f"{name}:{i + 1}: {MARKER} must be followed by a ```python "
                                 f"fence on the next line")
        if fence:
            ticks, start = fence.group(2), i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(ticks):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{name}:{start + 1}: a code fence that is never closed")
            if start > 0 and lines[start - 1].strip() == MARKER:
                blocks.append((name, start + 1, "\n".join(body) + "\n"))
        else:
            prose.append((i + 1, line))
        i += 1
    return blocks, prose


def relative_links(prose):
    """(line, path, anchor) of every link in the prose lines that is not a URL (path "" for an
    anchor on the same page, anchor "" for none); links inside inline code are not links."""
    found = []
    for number, line in prose:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue
            path, _, anchor = target.partition("#")
            found.append((number, path, anchor))
    return found


def anchors(prose):
    """The anchors GitHub gives the headings among the prose lines: lower case, punctuation
    dropped, spaces as hyphens."""
    found = set()
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-"))
    return found


def run_block(name, line, code, cwd, timeout=TIMEOUT_S):
    """Run one block with this Python on the CPU and the reference backend; None when it
    succeeds, else a message that names the block's file and line."""
    env = dict(os.environ, GDM_BACKEND="reference", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               GDM_ENGINE_CACHE=str(Path(cwd) / ".cache"), MPLBACKEND="Agg")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{name}:{line}: the runnable block did not finish within {timeout} s"
    if done.returncode != 0:
        return (f"{name}:{line}: the runnable block failed (exit {done.returncode})\n"
                f"{done.stderr[-4000:]}")
    return None


def _parsed():
    return {path: parse(path.read_text(encoding="utf-8"), _relative(path)) for path in DOCS}


BLOCKS = [block for blocks, _ in _parsed().values() for block in blocks]


def test_docs_exist():
    assert README.is_file()
    for page in ("ops", "models", "training", "sampling", "integrations", "benchmarks",
                 "results", "architecture", "contributing"):
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"


def test_readme_is_short():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines, more than {README_MAX_LINES}"


def test_readme_keeps_its_two_commands():
    text = README.read_text(encoding="utf-8")
    for command in ("make demo", "make test"):
        assert re.search(rf"^{command}\b", text, re.MULTILINE), f"README.md lost `{command}`"


def test_relative_links_exist():
    parsed = _parsed()
    broken = []
    for path, (_, prose) in parsed.items():
        for number, target, anchor in relative_links(prose):
            where = (path.parent / target).resolve() if target else path
            if not where.exists():
                broken.append(f"{_relative(path)}:{number}: {target} does not exist")
            elif anchor and where in parsed and anchor not in anchors(parsed[where][1]):
                broken.append(f"{_relative(path)}:{number}: {target}#{anchor}: no such heading")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_page_has_a_runnable_block_where_expected():
    """The README's quick start runs; without this a lost marker would pass unnoticed."""
    names = {name for name, _, _ in BLOCKS}
    assert "README.md" in names
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("name, line, code", BLOCKS, ids=[f"{n}:{l}" for n, l, _ in BLOCKS])
def test_runnable_block_runs(name, line, code, tmp_path):
    failure = run_block(name, line, code, tmp_path)
    assert failure is None, failure


# ---- the checks themselves can fail ------------------------------------------------------------

SAMPLE = f"""# page

[a page](other.md) and [a site](https://example.com) and [an anchor](#page)
`[not a link](nowhere.md)`

{MARKER}
```python
raise SystemExit(3)
```

```python
this block is not marked and never runs
```
"""


def test_parse_finds_marked_blocks_and_links():
    blocks, prose = parse(SAMPLE, "sample.md")
    assert blocks == [("sample.md", 7, "raise SystemExit(3)\n")]
    assert relative_links(prose) == [(3, "other.md", ""), (3, "", "page")]
    assert anchors(prose) == {"page"}
    assert anchors([(1, "## Flows: temperature, `T` (x/y)")]) == {"flows-temperature-t-xy"}


def test_a_failing_block_is_reported_with_its_file_and_line(tmp_path):
    (block,) = parse(SAMPLE, "sample.md")[0]
    failure = run_block(*block, tmp_path)
    assert failure is not None and failure.startswith("sample.md:7:") and "exit 3" in failure
    assert run_block("ok.md", 1, "import sys\n", tmp_path) is None


def test_a_marker_without_a_python_block_is_an_error():
    with pytest.raises(ValueError, match="sample.md:1"):
        parse(f"{MARKER}\n```bash\nls\n```\n", "sample.md")
    with pytest.raises(ValueError, match="never closed"):
        parse("```python\nx = 1\n", "sample.md")
