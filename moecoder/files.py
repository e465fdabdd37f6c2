"""Files that appear complete or not at all, JSONL read with errors that name file and line, the cache home.

Every file moecoder writes for a user (results, checkpoints, reports, manifests) goes through
`atomic_path`: written beside its destination under a temporary name, then renamed over it, so a
crash or kill -9 never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from moecoder.errors import UserError


def moecoder_home() -> Path:
    """Where moecoder caches datasets, verdicts and measurements: $MOECODER_HOME, default ~/.cache/moecoder."""
    return Path(os.environ.get("MOECODER_HOME") or Path.home() / ".cache" / "moecoder")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the mode open() would give it
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, obj) -> None:
    """Indented JSON, key order kept, written atomically."""
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """One JSON object per line, written atomically."""
    atomic_write(path, "".join(json.dumps(row) + "\n" for row in rows))


def parse_jsonl(lines: Iterable[str], source: str) -> Iterator[tuple[int, object]]:
    """(line number, value) for each non-blank line; malformed JSON is a UserError naming source and line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}, line {number}: not valid JSON ({exc.msg})") from None


def utf8_lines(path: Path, what: str) -> list[str]:
    """The lines of a text file; bytes that are not UTF-8 are a UserError naming the file and line."""
    lines = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UserError(f"{what} {path}, line {number}: not UTF-8 (byte {exc.start + 1} of the line)") from None
    return lines


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a Path; a UserError naming it when it is missing or not a regular file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    return path


def read_jsonl(path: str | os.PathLike, what: str = "file") -> list:
    """The values of a JSONL file; a missing file, a line that is not UTF-8 or not JSON is a UserError."""
    path = existing_file(path, what)
    return [value for _, value in parse_jsonl(utf8_lines(path, what), f"{what} {path}")]
