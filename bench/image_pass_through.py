"""Images that need no work pass through: what an image already within the model's budget costs.

    python bench/image_pass_through.py [--requests 60]

1. Pipeline: median ms to make a 512x384 photo JPEG and a 1000x700 screenshot PNG engine-ready, passed through
   vs re-encoded (image_pass_through: false, the old path: decode + convert + JPEG encode), and whether the
   engine gets the client's bytes.
2. End to end, through a real server to an instant fake OpenAI-compatible engine: p50 latency of a request
   carrying the photo as a data URI vs one carrying text of the same byte size (goal: within 2 ms).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_upstreams import FakeUpstream
from image_pipeline import encoded, screenshot
from media_corpus import photo
from server_process import running_server

from vlmserve.media.images import ImageLimits, prepare_image


def photo_jpeg() -> bytes:
    return encoded(photo(512, 384), "JPEG")


def screenshot_png() -> bytes:
    return encoded(screenshot(1000, 700), "PNG")


def _median_ms(run: object, repeat: int = 25) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def pipeline() -> None:
    print(f"{'input':<22} {'bytes':>8} {'pass-through ms':>16} {'re-encode ms':>13} {'ratio':>7} identical")
    for name, data in (("photo 512x384 JPEG", photo_jpeg()), ("screenshot 1000x700 PNG", screenshot_png())):
        passed = prepare_image(data, ImageLimits())
        fast = _median_ms(lambda data=data: prepare_image(data, ImageLimits()))
        slow = _median_ms(lambda data=data: prepare_image(data, ImageLimits(pass_through=False)))
        print(f"{name:<22} {len(data):>8} {fast:>16.2f} {slow:>13.2f} {slow / fast:>6.1f}x {passed.data == data}")


def end_to_end(requests: int) -> None:
    data = photo_jpeg()
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    with FakeUpstream() as upstream:
        model = {
            "name": "vision",
            "engine": "openai",
            "url": upstream.url + "/v1",
            "capabilities": ["completion", "vision"],
        }
        with running_server({"embedded_models": False, "access_log": False, "models": [model]}) as server:
            image = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": uri}}]
            text = [{"type": "text", "text": "hi " + "x" * len(uri)}]
            bodies = {"image": image, "same-size text": text}
            p50: dict[str, float] = {}
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for label in list(bodies) * 2:  # warm-up round, then the measured one
                    times = []
                    for _ in range(requests):
                        body = {
                            "model": "vision",
                            "max_tokens": 4,
                            "messages": [{"role": "user", "content": bodies[label]}],
                        }
                        began = time.perf_counter()
                        assert client.post("/v1/chat/completions", json=body).status_code == 200
                        times.append((time.perf_counter() - began) * 1000)
                    p50[label] = statistics.median(times)
    added = p50["image"] - p50["same-size text"]
    print(f"end to end p50: image {p50['image']:.2f} ms, same-size text {p50['same-size text']:.2f} ms, "
          f"added by the image {added:+.2f} ms (goal: within 2 ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    pipeline()
    end_to_end(args.requests)


if __name__ == "__main__":
    main()
