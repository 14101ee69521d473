#!/usr/bin/env bash
# GPU-aware scheduling on a real CUDA machine without internet, in one go (about 3-5 minutes; under 8).
#
#   1. where pip can reach PyPI (once; x86-64, CPython 3.12 wheels, about 40 MB):
#        scripts/gpu_check.sh --fetch-wheels [DIR]          (default DIR: .whl; XLLAMACPP_INDEX=<url> takes
#                                                            xllamacpp from that index, e.g. a CUDA build)
#   2. on the CUDA machine (it may have only torch, transformers and nvidia-ml-py), with vendor/llama.cpp
#      (scripts/fetch_llama_convert.sh) and DIR beside the tree:
#        scripts/gpu_check.sh [DIR]
#      (this workplace's device tool: run(command="bash scripts/gpu_check.sh .whl", carry=[".whl", "vendor"],
#       timeout_s=540); .whl and vendor/ are ignored by git, so they travel only when carried)
#
# It installs what is missing from DIR (--no-deps, into /tmp/vlmserve-gpu-site), builds a random ~200M
# parameter Llama (bf16 folder + f16 GGUF), then runs tests/gpu (pytest -m gpu): NVML's devices, transformers on
# CUDA (estimate vs NVML), llama.cpp with all layers then part of them under a budget (only when the xllamacpp
# build has CUDA; the PyPI wheel is CPU-only), eviction under a tight gpu_memory_budget_mb. The figures are the
# lines starting GPU-CHECK; they are also written to $OUT/gpu_check.log when OUT is set. Exit 0: all passed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
# the packages vlmserve imports that such a machine lacks, at requirements.lock's versions
CARRIED=(pydantic pydantic_core pydantic-settings python-dotenv typing-inspection annotated-types annotated-doc
         starlette fastapi uvicorn h11 orjson python-multipart sniffio gguf pytest-asyncio pillow_heif xllamacpp)

pin() { grep -i -m1 -E "^${1//[-_]/[-_]}==" requirements.lock || echo "$1"; }

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    DEST="${2:-.whl}"
    mkdir -p "$DEST"
    for name in "${CARRIED[@]}"; do
        extra=()
        [[ "$name" == xllamacpp && -n "${XLLAMACPP_INDEX:-}" ]] && extra=(--index-url "$XLLAMACPP_INDEX")
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
            "${extra[@]}" -d "$DEST" "$(pin "$name")" || echo "could not fetch $name" >&2
    done
    ls -la "$DEST"
    exit 0
fi

WHEELS="${1:-.whl}"
LOG="${OUT:-/tmp}/gpu_check.log"
WORK="${VLMSERVE_GPU_WORK:-/tmp/vlmserve-gpu}"
SITE=/tmp/vlmserve-gpu-site
exec > >(tee "$LOG") 2>&1
echo "== vlmserve GPU check ($(date -u +%FT%TZ)); python: $("$PY" --version 2>&1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv

# 1. the carried wheels, all of them (the lock's versions shadow whatever older ones the machine has)
wheels=("$WHEELS"/*.whl)
if [[ -e "${wheels[0]}" ]]; then
    echo "installing ${#wheels[@]} carried wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
        || { echo "FAILED: pip install of the carried wheels"; exit 1; }
else
    echo "no wheels in $WHEELS: using what is installed"
fi
export PYTHONPATH="$SITE:$ROOT/src:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import vlmserve.scheduler.core, vlmserve.runners.app, pynvml, torch, transformers" \
    || { echo "FAILED: vlmserve's imports (see above for the module that is missing)"; exit 1; }

# 2. the random models (cached in $WORK between runs)
export VLMSERVE_GPU_HF_MODEL="$WORK/llama-hf" VLMSERVE_GPU_GGUF="$WORK/llama-f16.gguf"
"$PY" - <<'EOF' || { echo "FAILED: building the random Llama"; exit 1; }
import os, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import torch, transformers
import tiny_models

hf, gguf = Path(os.environ["VLMSERVE_GPU_HF_MODEL"]), Path(os.environ["VLMSERVE_GPU_GGUF"])
if not (hf / "config.json").is_file():
    hf.mkdir(parents=True, exist_ok=True)
    tiny_models._build_tokenizer(hf)
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=1024, intermediate_size=4096,
        num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(hf)
print("random Llama:", sum(f.stat().st_size for f in hf.glob("*.safetensors")) // 2**20, "MB of safetensors")
if not gguf.is_file():
    if tiny_models.converter_available():
        tiny_models._run_vendor(["-c", tiny_models._CONVERT_TEXT, str(hf), "--outfile", str(gguf), "--outtype", "f16"])
        print("GGUF:", gguf.stat().st_size // 2**20, "MB")
    else:
        print("no vendor/llama.cpp converter: the GGUF case is skipped (scripts/fetch_llama_convert.sh)")
EOF
[[ -f "$VLMSERVE_GPU_GGUF" ]] || unset VLMSERVE_GPU_GGUF
if "$PY" -c "import xllamacpp, sys; sys.exit(0 if any(str(d.get('type')).endswith('GPU') for d in xllamacpp.get_device_info()) else 1)" 2>/dev/null; then
    export VLMSERVE_GPU_LLAMACPP_CUDA=1
    echo "xllamacpp: CUDA build"
else
    echo "xllamacpp: no CUDA in this build (the GGUF offload case is skipped; carry a CUDA wheel with XLLAMACPP_INDEX)"
fi

# 3. the checks
timeout 420 "$PY" -m pytest tests/gpu -m gpu -s -q -p no:cacheprovider -o addopts="" --timeout 400 \
    -W "ignore::DeprecationWarning" -W "ignore::FutureWarning" -W "ignore::UserWarning" -W "ignore::ResourceWarning"
status=$?
echo "== figures"
grep "GPU-CHECK" "$LOG" | grep -v "grep" || true
echo "== gpu_check exit $status"
exit $status
