"""The one atomic file write: write under a temporary name beside the target, then rename it onto the
target, so a reader (or a process after a crash) never sees half a file. Pure Python: no Django."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, *, prefix: str | None = None, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write to: renamed onto `path` when the block ends without an
    error, removed otherwise. Its name ends with `path`'s own suffixes (savers that look at the extension,
    such as Keras', write the right format), unless `suffix` says otherwise; `prefix` defaults to a dot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(
        dir=path.parent,
        prefix=prefix if prefix is not None else f".{path.name}.",
        suffix=suffix if suffix is not None else ".tmp" + "".join(path.suffixes),
    )
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary)` and put what it wrote at `path` whole, or leave `path` as it was."""
    with atomic_path(path) as temporary:
        write(temporary)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda temporary: temporary.write_bytes(data))
