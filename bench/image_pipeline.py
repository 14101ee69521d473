"""Image pipeline: vlmserve's prepare_image vs the naive one, same images, same run, budget 1024 px.

    python bench/image_pipeline.py [--repeat 7] [--filter bicubic] [--plot chart.png]

Naive = what hand-written wrappers do: Image.open, convert("RGB"), LANCZOS resize at full size, JPEG q85.
vlmserve = media/images.prepare_image: header checks, JPEG DCT-domain draft decoding at the smallest scale
that still covers the target, integer box reduction while > 2x too large, the final filter, JPEG q90.

Columns: median ms per image (decode to bytes ready for the engine), naive/vlmserve ratio, PSNR of vlmserve's
resized pixels and of the JPEG it sends (decoded again) against a reference (full decode + LANCZOS at full
size, not re-encoded), and the peak RSS growth while preparing (VmHWM reset through /proc/self/clear_refs).
Targets on the 12 MP JPEG: ratio >= 3.5, PSNR >= 35.5 dB, RSS growth <= 25 MB.
Inputs are generated (photo-like shading + texture; a flat UI screenshot with text), nothing is downloaded.
"""

from __future__ import annotations

import argparse
import functools
import io
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_corpus import photo
from plotting import save_grouped

from vlmserve.media.images import ImageLimits, prepare_image, prepare_pixels
from vlmserve.media.transform import fit_size

BUDGET = 1024


def screenshot(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (245, 246, 248))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    draw.rectangle((0, 0, width, 64), fill=(40, 44, 52))
    draw.rectangle((0, 64, 300, height), fill=(230, 232, 236))
    for row in range(80, height - 40, 36):
        line = f"Line {row // 36}: invoice total 1,234.56 EUR - status paid - ref #A{row}"
        draw.text((330, row), line, fill=(20, 20, 20), font=font)
        draw.text((20, row), f"Menu item {row // 36}", fill=(60, 60, 60), font=font)
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))
    return out.getvalue()


def inputs() -> list[tuple[str, bytes]]:
    return [
        ("12 MP JPEG 4000x3000", encoded(photo(4000, 3000, seed=1), "JPEG")),
        ("4K JPEG 3840x2160", encoded(photo(3840, 2160, seed=2), "JPEG")),
        ("1.2 MP JPEG 1280x960", encoded(photo(1280, 960, seed=3), "JPEG")),
        ("4K PNG 3840x2160", encoded(photo(3840, 2160, seed=4), "PNG")),
        ("1440p PNG screenshot", encoded(screenshot(2560, 1440), "PNG")),
    ]


def naive(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize(fit_size(image.width, image.height, BUDGET), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def psnr(a: Image.Image, reference: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _child(which: str, path: str, filt: str, queue: mp.Queue[float]) -> None:
    data = Path(path).read_bytes()
    limits = ImageLimits(max_side=BUDGET, resize_filter=filt)  # type: ignore[arg-type]
    fn: Callable[[], object] = (lambda: naive(data)) if which == "naive" else (lambda: prepare_image(data, limits))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    except OSError:
        queue.put(float("nan"))
        return
    before = _status_kb("VmRSS")
    fn()
    queue.put((_status_kb("VmHWM") - before) / 1024)


def peak_growth_mb(which: str, data: bytes, filt: str) -> float:
    """Peak RSS growth while preparing one image, in a fresh process (a warm allocator would hide it)."""
    with tempfile.NamedTemporaryFile(suffix=".img") as handle:
        handle.write(data)
        handle.flush()
        ctx = mp.get_context("spawn")
        queue: mp.Queue[float] = ctx.Queue()
        proc = ctx.Process(target=_child, args=(which, handle.name, filt, queue))
        proc.start()
        result = queue.get(timeout=120)
        proc.join()
        return float(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--filter", default="bicubic", choices=["bicubic", "lanczos", "hamming", "bilinear"])
    parser.add_argument("--plot", "--chart", dest="plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    args = parser.parse_args()
    limits = ImageLimits(max_side=BUDGET, resize_filter=args.filter)
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} budget={BUDGET}px filter={args.filter}")
    header = f"{'image':24} {'bytes':>9} {'naive ms':>9} {'vlm ms':>8} {'ratio':>6} {'PSNR px':>8} {'PSNR out':>9}"
    print(header + f" {'naive out':>10} {'RSS+ MB':>8} {'naive RSS+':>10}")
    rows: list[tuple[str, float, float]] = []
    for name, data in inputs():
        source = Image.open(io.BytesIO(data)).convert("RGB")
        size = fit_size(source.width, source.height, BUDGET)
        reference = np.asarray(source.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
        del source
        t_naive = median_ms(functools.partial(naive, data), args.repeat)
        t_vlm = median_ms(functools.partial(prepare_image, data, limits), args.repeat)
        part = prepare_image(data, limits)
        # the pixels before encoding: the same stages without the final JPEG
        px = prepare_pixels(data, limits)
        out = Image.open(io.BytesIO(part.data)).convert("RGB")
        naive_out = Image.open(io.BytesIO(naive(data))).convert("RGB")
        rss_vlm = peak_growth_mb("vlmserve", data, args.filter)
        rss_naive = peak_growth_mb("naive", data, args.filter)
        print(
            f"{name:24} {len(data):>9} {t_naive:>9.1f} {t_vlm:>8.1f} {t_naive / t_vlm:>5.2f}x "
            f"{psnr(px, reference):>7.1f}  {psnr(out, reference):>8.1f} {psnr(naive_out, reference):>10.1f} "
            f"{rss_vlm:>8.1f} {rss_naive:>10.1f}"
        )
        rows.append((name, t_naive, t_vlm))
    print(
        "PSNR px: vlmserve's resized pixels vs reference; PSNR out: the q90 JPEG an engine gets;"
        " naive out: the naive q85 JPEG"
    )
    if args.plot:
        write_chart(rows, args.plot)


def write_chart(rows: list[tuple[str, float, float]], path: str) -> None:
    ratio = rows[0][1] / rows[0][2]
    save_grouped(
        path,
        f"Image intake to a {BUDGET}px budget: naive PIL vs vlmserve's pipeline",
        ["\n".join(r[0].rsplit(" ", 1)) for r in rows],
        {"naive (full decode, LANCZOS, q85)": [r[1] for r in rows],
         "vlmserve (draft decode, reduce, filter, q90)": [r[2] for r in rows]},
        "ms per image (median, lower is better)",
        note=f"{ratio:.1f}x faster on the 12 MP JPEG",
    )  # fmt: skip


if __name__ == "__main__":
    main()
