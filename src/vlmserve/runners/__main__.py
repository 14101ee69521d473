"""Runner entry point: `python -m vlmserve.runners --spec '<ModelSpec JSON>'`.

Loads one model, serves it over an OpenAI-compatible HTTP API on a free loopback port, prints
`VLMSERVE_RUNNER_READY <url>` on stdout, and exits when stdin closes (the gateway stopped or died).
"""

from __future__ import annotations

import argparse
import sys

from vlmserve.domain.spec import ModelSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmserve-runner")
    parser.add_argument("--spec", required=True, help="ModelSpec as JSON")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    spec = ModelSpec.model_validate_json(args.spec)
    if spec.engine == "llamacpp":
        from vlmserve.runners.llamacpp import serve_llamacpp

        return serve_llamacpp(spec, threads=args.threads)
    from vlmserve.runners.app import serve_python_engine

    return serve_python_engine(spec, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
