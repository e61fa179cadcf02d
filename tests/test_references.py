"""References stay inside the repository: no comment or document cites notes that live
next to a checkout rather than in it (the facts the code relies on are in
docs/performance.md, with the command that measures them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Spelled in pieces, so that this file does not itself read as a reference to them.
_NOTES = "_NOTES"
_SHARED = "shared"
_STYLE = "STY" + "LE"  # the style notes' name, also spelled in pieces
OUTSIDE = re.compile(
    "|".join(
        [
            "PERF" + _NOTES,
            "PREFECT" + _NOTES,
            r"\.\./" + _SHARED,  # the sibling folder, one or more levels up
            r"(?<![\w.-])" + _SHARED + "/",  # a file in it, as a path
        ]
    )
)


def _files() -> list[Path]:
    """Tracked files and new ones git does not ignore (what the next commit can hold)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [REPO / name for name in out.split("\0") if name]


def outside_references(path: Path, root: Path = REPO) -> list[str]:
    """``path:line: text`` for each line of a text file that points outside the repo."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return []  # binary, or deleted in the working tree
    rel = path.relative_to(root)
    return [
        f"{rel}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]


def test_no_file_outside_docs_points_outside_the_repository() -> None:
    here = Path(__file__).resolve()  # its patterns and samples are the exception
    files = [f for f in _files() if f.relative_to(REPO).parts[0] != "docs" and f != here]
    assert any(f.name == "README.md" for f in files)  # the listing is not empty
    bad = [hit for f in files for hit in outside_references(f)]
    assert not bad, "\n" + "\n".join(bad)


def test_the_check_flags_such_references(tmp_path: Path) -> None:
    sample = tmp_path / "mod.py"
    sample.write_text(
        "# fine: see docs/performance.md\n"
        "# fine: a shared_memory buffer, /dev/shm, model/shared_layers.py\n"
        f"# bad: see PERF{_NOTES}\n"
        f"# bad: ../{_SHARED}/data/README.md\n"
        f"# bad: copied from {_SHARED}/{_STYLE}.md\n"
    )
    assert [hit.split(":")[1] for hit in outside_references(sample, tmp_path)] == ["3", "4", "5"]


def test_performance_facts_cite_their_command() -> None:
    doc = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "python -m bench.facts" in doc
    assert (REPO / "bench" / "facts.py").is_file()
