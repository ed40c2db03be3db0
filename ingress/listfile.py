"""Small operator-written list files (credentials, API tokens): one entry per line."""

from pathlib import Path


def entries(path: Path) -> list[tuple[int, str]]:
    """The file's non-blank lines that are not ``#`` comments, stripped, with their line
    numbers (for errors that point at the line). OSError or UnicodeDecodeError when it
    cannot be read as UTF-8."""
    lines = path.read_text("utf-8").splitlines()
    found = [(number, line.strip()) for number, line in enumerate(lines, start=1)]
    return [(number, line) for number, line in found if line and not line.startswith("#")]
