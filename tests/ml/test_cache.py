import os
import time

import numpy as np
import pytest
from PIL import Image

from ml import cache
from ml.cache import ImageDecodeError, build_image_cache, cache_key, prune_image_cache
from ml.images import load_image
from tests.memory import needs_smaps, resident_bytes


def write_images(folder, count: int, *, size=(12, 9), seed: int = 0) -> list:
    """Noisy RGB PNGs of an odd size, so rows show both resizing and colour conversion."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(generator.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_cache_rows_equal_load_image_of_each_source(tmp_path, color_mode, channels):
    sources = write_images(tmp_path / "images", 5)
    rows = build_image_cache(sources, folder=tmp_path / "cache", key="abc", image_size=8, color_mode=color_mode)
    assert isinstance(rows, np.memmap)
    assert rows.shape == (5, 8, 8, channels)
    assert rows.dtype == np.uint8
    assert not rows.flags.writeable
    for row, source in zip(rows, sources, strict=True):
        assert (row == load_image(source, image_size=8, color_mode=color_mode)).all()
    assert files_in(tmp_path / "cache") == ["abc.npy"]


def test_a_built_cache_is_read_back_without_decoding_and_touched(tmp_path, monkeypatch):
    sources = write_images(tmp_path / "images", 4)
    folder = tmp_path / "cache"
    first = build_image_cache(sources, folder=folder, key="abc", image_size=8, color_mode="rgb")
    path = folder / "abc.npy"
    old = time.time() - 1000
    os.utime(path, (old, old))
    inode = path.stat().st_ino

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was decoded again")

    monkeypatch.setattr(cache, "load_image", refuse)
    second = build_image_cache(sources, folder=folder, key="abc", image_size=8, color_mode="rgb")
    assert (second == first).all()
    assert path.stat().st_ino == inode
    assert path.stat().st_mtime > old + 500


def test_the_key_depends_on_size_colour_mode_and_order():
    entries = [(1, "a.png"), (2, "b.png")]
    key = cache_key(entries, image_size=16, color_mode="rgb")
    assert key == cache_key(list(entries), image_size=16, color_mode="rgb")
    assert all(character in "0123456789abcdef" for character in key)
    others = {
        cache_key(entries, image_size=32, color_mode="rgb"),
        cache_key(entries, image_size=16, color_mode="grayscale"),
        cache_key(entries[::-1], image_size=16, color_mode="rgb"),
        cache_key([(1, "a.png"), (3, "b.png")], image_size=16, color_mode="rgb"),
        cache_key([(1, "a.png"), (2, "c.png")], image_size=16, color_mode="rgb"),
    }
    assert key not in others
    assert len(others) == 5


def test_worker_processes_fill_every_row_and_report_progress(tmp_path, monkeypatch):
    sources = write_images(tmp_path / "images", 40, size=(8, 8))

    def not_here(*args, **kwargs):
        raise AssertionError("decoded in the calling process, not in the workers")

    # The workers are fresh interpreters: they decode with the real function, this process may not.
    monkeypatch.setattr(cache, "load_image", not_here)
    reports = []
    rows = build_image_cache(
        sources,
        folder=tmp_path / "cache",
        key="abc",
        image_size=8,
        color_mode="rgb",
        workers=2,
        min_parallel=1,
        report=lambda done, total: reports.append((done, total)),
    )
    for row, source in zip(rows, sources, strict=True):
        assert (row == load_image(source, image_size=8, color_mode="rgb")).all()
    assert reports[-1] == (40, 40)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("corruption", ["truncated png", "text file"])
def test_a_corrupt_source_names_its_row_and_leaves_no_file(tmp_path, monkeypatch, workers, corruption):
    monkeypatch.setattr(cache, "CHUNK_ROWS", 4)
    sources = write_images(tmp_path / "images", 12, size=(8, 8))
    bad = tmp_path / "images" / "bad.png"
    if corruption == "truncated png":
        bad.write_bytes(sources[0].read_bytes()[:60])
    else:
        bad.write_text("not an image at all")
    sources[9] = bad
    folder = tmp_path / "cache"
    with pytest.raises(ImageDecodeError) as caught:
        build_image_cache(
            sources, folder=folder, key="abc", image_size=8, color_mode="rgb", workers=workers, min_parallel=1
        )
    assert caught.value.index == 9
    assert "bad.png" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert files_in(folder) == []


def test_a_bad_key_or_colour_mode_is_refused(tmp_path):
    sources = write_images(tmp_path / "images", 1)
    with pytest.raises(ValueError, match="cache key"):
        build_image_cache(sources, folder=tmp_path, key="../escape", image_size=8, color_mode="rgb")
    with pytest.raises(ValueError, match="color_mode"):
        build_image_cache(sources, folder=tmp_path, key="abc", image_size=8, color_mode="cmyk")


def make_file(folder, name: str, size: int, age: float):
    path = folder / name
    path.write_bytes(b"\0" * size)
    moment = time.time() - age
    os.utime(path, (moment, moment))
    return path


def test_prune_deletes_least_recently_used_caches_above_the_limit_but_never_kept_ones(tmp_path):
    oldest = make_file(tmp_path, "aaa.npy", 100, age=500)
    kept = make_file(tmp_path, "bbb.npy", 100, age=400)
    older = make_file(tmp_path, "ccc.npy", 100, age=300)
    newer = make_file(tmp_path, "ddd.npy", 100, age=200)
    newest = make_file(tmp_path, "eee.npy", 100, age=100)
    deleted = prune_image_cache(tmp_path, max_bytes=250, keep={"bbb"})
    assert deleted == [oldest, older, newer]
    assert files_in(tmp_path) == ["bbb.npy", "eee.npy"]
    assert kept.exists() and newest.exists()
    assert prune_image_cache(tmp_path, max_bytes=250, keep={"bbb"}) == []


def test_prune_removes_stale_temporary_files_and_leaves_young_ones(tmp_path):
    stale = make_file(tmp_path, "abc.x1.tmp", 10, age=2 * 3600)
    young = make_file(tmp_path, "abc.x2.tmp", 10, age=60)
    other = make_file(tmp_path, "notes.txt", 10, age=10 * 3600)
    assert prune_image_cache(tmp_path, max_bytes=0) == [stale]
    assert young.exists() and other.exists()


@needs_smaps
def test_released_pages_leave_memory_but_not_the_data_and_a_copy_on_write_map_keeps_its_changes(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(4_000_000, dtype=np.int32).reshape(1000, 4000))
    rows = np.load(path, mmap_mode="r")
    total = int(rows.sum(dtype=np.int64))
    assert resident_bytes(path) > rows.nbytes / 2
    cache.release_pages(rows[10:20])  # any view of the mapping lets go of all of it
    assert resident_bytes(path) < rows.nbytes / 2
    assert int(rows.sum(dtype=np.int64)) == total

    changed = np.load(path, mmap_mode="c")
    changed[:] = 7
    cache.release_pages(changed)
    assert (changed == 7).all()
