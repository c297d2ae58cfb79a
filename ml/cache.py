"""A decoded-image cache on disk: every image of a training run decoded and resized once.

Rows go into one uint8 `.npy` file per (dataset version, size, colour mode), built with worker
processes that write straight into the file, then read back memory-mapped by training.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.files import atomic_path
from ml.images import channels_for, load_image

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

# Bump when the rows a key names change (e.g. load_image prepares images differently).
FORMAT_VERSION = 1
CHUNK_ROWS = 256
MIN_PARALLEL = 512
REPORT_INTERVAL = 0.5
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 3600.0

CACHE_KEY_PATTERN = re.compile(r"[0-9A-Za-z_-]{1,128}")


class ImageDecodeError(ValueError):
    """An image of the cache could not be decoded; `.index` says which source."""

    def __init__(self, index: int, source: str | os.PathLike, reason: str):
        self.index = index
        self.source = os.fspath(source)
        self.reason = reason
        super().__init__(f"image {index} ({Path(self.source).name}) cannot be decoded: {reason}")


def cache_key(entries: Sequence[tuple[int, str]], *, image_size: int, color_mode: str) -> str:
    """A hex digest naming the cache of these (item id, file name) pairs at this size and colour mode.

    The order of entries is the order of rows, so the key depends on it.
    """
    channels_for(color_mode)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, not {image_size}")
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, image_size, color_mode]).encode())
    for item_id, name in entries:
        digest.update(json.dumps([int(item_id), str(name)]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def build_image_cache(
    sources: Sequence[str | os.PathLike],
    *,
    folder: Path,
    key: str,
    image_size: int,
    color_mode: str,
    workers: int = 2,
    report: Callable[[int, int], object] | None = None,
    max_pixels: int | None = None,
    min_parallel: int = MIN_PARALLEL,
) -> np.ndarray:
    """Return the read-only memory-mapped uint8 rows (N, size, size, channels) of `sources`.

    An existing cache under `key` is returned at once; otherwise it is built in a temporary file
    and renamed into place, so a crash never leaves a half-written cache under the final name.
    `report(done, total)` is called about every half second and at the end. Raises
    ImageDecodeError for the first source that cannot be decoded.
    """
    channels = channels_for(color_mode)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, not {image_size}")
    if not CACHE_KEY_PATTERN.fullmatch(key):
        raise ValueError(f"cache key must be 1 to 128 letters, digits, '-' or '_', not {key!r}")
    folder = Path(folder)
    final = folder / f"{key}.npy"
    shape = (len(sources), image_size, image_size, channels)
    cached = _open_existing(final, shape)
    if cached is not None:
        return cached

    with atomic_path(final, prefix=f"{key}.", suffix=TEMP_SUFFIX) as temporary:
        rows = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        _reserve_space(temporary)
        progress = _Progress(len(sources), report)
        if workers <= 1 or len(sources) < min_parallel:
            _decode_here(rows, sources, image_size, color_mode, max_pixels, progress)
            del rows
        else:
            del rows
            _decode_in_workers(temporary, sources, image_size, color_mode, max_pixels, workers, progress)
        progress.finish()
        sync_file(temporary)
    return np.load(final, mmap_mode="r")


def release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident memory.

    Read-only or flushed file pages stay in the kernel's page cache and come back on the next read;
    they only stop counting as this process's memory. Reading a whole cache once (features of every
    image) would otherwise leave all of it resident: 0.55 GB for 60,000 images at 96 px. An array
    that is not a file's shared mapping is left alone: dropping the pages of a copy-on-write
    mapping (mode "c") would lose its changes.
    """
    mapping, shared_file = array, False
    while mapping is not None and not isinstance(mapping, mmap.mmap):
        if isinstance(mapping, np.memmap):
            shared_file = mapping.filename is not None and mapping.mode in ("r", "r+", "w+")
        mapping = getattr(mapping, "base", None)
    if shared_file and mapping is not None and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


def prune_image_cache(folder: Path, *, max_bytes: int, keep: Collection[str] = ()) -> list[Path]:
    """Delete the least recently used caches until the folder holds at most `max_bytes`; return them.

    Caches named in `keep` are never deleted. Temporary files older than an hour are leftovers of
    crashed builds and go first; younger ones belong to a build under way and are left alone.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be zero or more, not {max_bytes}")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    deleted: list[Path] = []
    caches: list[tuple[float, int, Path]] = []
    total = 0
    for path in folder.iterdir():
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        if not path.is_file():
            continue
        if path.name.endswith(TEMP_SUFFIX):
            if now - status.st_mtime > STALE_TEMP_SECONDS and _unlink(path):
                deleted.append(path)
            else:
                total += status.st_size
        elif path.suffix == ".npy" and CACHE_KEY_PATTERN.fullmatch(path.stem):
            total += status.st_size
            if path.stem not in keep:
                caches.append((status.st_mtime, status.st_size, path))
    for _, size, path in sorted(caches):
        if total <= max_bytes:
            break
        if _unlink(path):
            deleted.append(path)
        total -= size
    return deleted


def open_image_cache(folder: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The finished cache of rows of `shape` under `key`, or None when there is none."""
    return _open_existing(Path(folder) / f"{key}.npy", shape)


def _open_existing(final: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The finished cache, touched for LRU pruning, or None when there is none (or not of this shape)."""
    try:
        rows = np.load(final, mmap_mode="r")
    except FileNotFoundError:
        return None
    except ValueError:
        # Not a readable .npy (cannot happen through os.replace, but a disk can lie): rebuild it.
        return None
    if rows.shape != shape or rows.dtype != np.uint8:
        return None
    try:
        os.utime(final)
    except OSError:
        pass
    return rows


def _reserve_space(path: Path) -> None:
    """Allocate the file's blocks now: a full disk then fails here, not as a SIGBUS mid-write."""
    if not hasattr(os, "posix_fallocate"):
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(descriptor).st_size
        if size:
            os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno not in {errno.EOPNOTSUPP, errno.EINVAL}:
            raise
    finally:
        os.close(descriptor)


def sync_file(path: Path) -> None:
    """Write the rows to disk before the rename makes them the cache, so a power cut cannot leave zeros."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class _Progress:
    """Counts decoded rows and calls the reporter at most every REPORT_INTERVAL seconds."""

    def __init__(self, total: int, report: Callable[[int, int], object] | None):
        self.total = total
        self.done = 0
        self.report = report
        self._last = time.monotonic()

    def add(self, rows: int) -> None:
        self.done += rows
        if self.report is not None and time.monotonic() - self._last >= REPORT_INTERVAL:
            self._last = time.monotonic()
            self.report(self.done, self.total)

    def finish(self) -> None:
        if self.report is not None:
            self.report(self.done, self.total)


def _decode_here(
    rows: np.ndarray,
    sources: Sequence[str | os.PathLike],
    image_size: int,
    color_mode: str,
    max_pixels: int | None,
    progress: _Progress,
) -> None:
    for start in range(0, len(sources), CHUNK_ROWS):
        chunk = sources[start : start + CHUNK_ROWS]
        failure = _decode_into(rows, start, chunk, image_size, color_mode, max_pixels, stop=None)
        if failure is not None:
            raise ImageDecodeError(failure[0], sources[failure[0]], failure[1])
        progress.add(len(chunk))


def _decode_into(
    rows: np.ndarray,
    start: int,
    sources: Sequence[str | os.PathLike],
    image_size: int,
    color_mode: str,
    max_pixels: int | None,
    stop: Event | None,
) -> tuple[int, str] | None:
    """Write rows start.. of `sources`; return (row, reason) of the first failure, else None."""
    for offset, source in enumerate(sources):
        if stop is not None and stop.is_set():
            return None
        try:
            rows[start + offset] = load_image(
                os.fspath(source), image_size=image_size, color_mode=color_mode, max_pixels=max_pixels
            )
        except ValueError as error:
            return start + offset, str(error)
    return None


# Worker processes: the stop event arrives once, through the pool's initializer.
_worker_stop: Event | None = None


def _worker_init(stop: Event) -> None:
    global _worker_stop
    _worker_stop = stop


def _worker_decode(
    path: str, start: int, sources: list[str], image_size: int, color_mode: str, max_pixels: int | None
) -> tuple[int, str] | None:
    if _worker_stop is not None and _worker_stop.is_set():
        return None
    # Rows go straight into the shared file; the parent's fsync writes them out, so no msync here.
    rows = np.load(path, mmap_mode="r+")
    try:
        failure = _decode_into(rows, start, sources, image_size, color_mode, max_pixels, stop=_worker_stop)
    finally:
        del rows
    if failure is not None and _worker_stop is not None:
        _worker_stop.set()
    return failure


def _decode_in_workers(
    temporary: Path,
    sources: Sequence[str | os.PathLike],
    image_size: int,
    color_mode: str,
    max_pixels: int | None,
    workers: int,
    progress: _Progress,
) -> None:
    # Spawn, not fork: the parent may already hold TensorFlow's threads and locks. Spawned workers
    # re-import the parent's __main__ module (manage.py: cheap), so a script calling this should
    # not import TensorFlow at its top level, or every worker pays for it.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    paths = [os.fspath(source) for source in sources]
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(stop,))
    failure: tuple[int, str] | None = None
    try:
        pending: dict[Future, int] = {}
        for start in range(0, len(paths), CHUNK_ROWS):
            chunk = paths[start : start + CHUNK_ROWS]
            future = executor.submit(
                _worker_decode, os.fspath(temporary), start, chunk, image_size, color_mode, max_pixels
            )
            pending[future] = len(chunk)
        while pending and failure is None:
            finished, _ = wait(pending, timeout=REPORT_INTERVAL, return_when=FIRST_COMPLETED)
            for future in finished:
                count = pending.pop(future)
                failure = future.result()
                if failure is not None:
                    break
                progress.add(count)
            if not finished:
                progress.add(0)
    finally:
        # Chunks under way see the event and stop at their next image; queued ones never start.
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        index, reason = failure
        raise ImageDecodeError(index, sources[index], reason)
