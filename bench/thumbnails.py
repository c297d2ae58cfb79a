"""Thumbnails of large photos: the size of the original and of its thumbnail, and the time to make it.

    python -m bench.thumbnails

A 4000×3000 photo (scikit-image's coffee, enlarged, with sensor-like noise) as a JPEG and as a PNG.
"""

from __future__ import annotations

import io
import platform
import time

import numpy as np
from PIL import Image

from bench.common import write_results
from ml.images import make_thumbnail


def photo(width: int = 4000, height: int = 3000) -> Image.Image:
    try:
        from skimage import data

        base = Image.fromarray(data.coffee())
    except ImportError:  # a gradient when scikit-image is not installed
        base = Image.radial_gradient("L").convert("RGB")
    enlarged = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    noise = np.random.default_rng(0).normal(0, 6, enlarged.shape)
    return Image.fromarray(np.clip(enlarged + noise, 0, 255).astype(np.uint8))


def main() -> None:
    image = photo()
    rows = []
    for format, options in (("JPEG", {"quality": 92}), ("PNG", {})):
        buffer = io.BytesIO()
        image.save(buffer, format=format, **options)
        original = buffer.getvalue()
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            thumbnail = make_thumbnail(original)
            timings.append(time.perf_counter() - start)
        with Image.open(io.BytesIO(thumbnail)) as small:
            size = small.size
        rows.append(
            {
                "original": f"{image.width}×{image.height} {format}",
                "original_bytes": len(original),
                "thumbnail": f"{size[0]}×{size[1]} WebP",
                "thumbnail_bytes": len(thumbnail),
                "seconds_median": sorted(timings)[1],
            }
        )
    print(f"{'original':<22}{'bytes':>12}  {'thumbnail':<16}{'bytes':>8}{'seconds':>9}")
    for row in rows:
        print(
            f"{row['original']:<22}{row['original_bytes']:>12,}  {row['thumbnail']:<16}"
            f"{row['thumbnail_bytes']:>8,}{row['seconds_median']:>9.3f}"
        )
    write_results("thumbnails", {"machine": platform.platform(), "rows": rows})


if __name__ == "__main__":
    main()
