"""Transformers engine: a Hugging Face model folder (VLM or text-only) on torch, streaming token by token.

Image-text-to-text folders (LLaVA, Idefics3/SmolVLM, ...) load with AutoProcessor +
AutoModelForImageTextToText; anything else with AutoTokenizer + AutoModelForCausalLM. `model.generate` runs in
a thread and feeds a TextIteratorStreamer; a StoppingCriteria watches the cancel event (client gone) and our
own stop flag (a stop string was seen), so generation ends at the next token either way.

Tools: the chat template is rendered with `tools` (and the history's calls and results), and the model's
`<tool_call>` blocks are read back as calls (tool_parsing.py). A template that never reads `tools` cannot
show them to the model: such a request is a 400 naming `tools`, as is a forced call (`tool_choice`
"required" or a named function), which this engine cannot constrain.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    ChatChunk,
    FinishReason,
    ImageInput,
    ImagePart,
    Message,
    SamplingParams,
    TextPart,
    ToolCallDelta,
    Tools,
    Usage,
)
from vlmserve.errors import BadRequest, EngineError, InvalidMedia, UnsupportedCapability
from vlmserve.runners.tool_parsing import ToolTextSplitter
from vlmserve.wire.openai_codec import tool_to_wire

DEFAULT_MAX_TOKENS = 256


def pick_device(device: str, cuda_available: bool) -> str:
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available:
        raise SystemExit("device: cuda was asked for, but torch sees no CUDA device")
    return device


def pick_dtype_name(dtype: str, device: str, bf16_ok: bool) -> str:
    if dtype != "auto":
        return dtype
    if device == "cpu":
        return "float32"
    return "bfloat16" if bf16_ok else "float16"


def template_texts(processor: Any, tokenizer: Any) -> list[str]:
    """Every chat template the processor and tokenizer carry (a tokenizer may have named ones: tool_use)."""
    out: list[str] = []
    for template in (getattr(processor, "chat_template", None), getattr(tokenizer, "chat_template", None)):
        if isinstance(template, str):
            out.append(template)
        elif isinstance(template, dict):
            out += [t for t in template.values() if isinstance(t, str)]
        elif isinstance(template, list):  # the saved form of named templates: [{"name", "template"}]
            out += [t["template"] for t in template if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return out


def reads_tools(templates: list[str]) -> bool:
    """Whether a Jinja template uses the `tools` variable at all."""
    return any(re.search(r"\btools\b", t) for t in templates)


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return text  # not JSON: the template gets the text as the client sent it


def _open_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidMedia(f"cannot decode image: {exc}") from exc
    return image.convert("RGB")


class _StopBuffer:
    """Holds back text that could be the start of a stop string; cuts at the first stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.sent - self.hold)) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._take(min(hits))
        return self._take(len(self.text) - self.hold)

    def flush(self) -> str:
        return "" if self.stopped else self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent : end], end
        return out


def torch_placement(spec: ModelSpec, threads: int | None) -> tuple[str, Any]:
    """Check the model folder, set torch's threads, and pick (device, dtype) for `spec`."""
    import torch

    if not spec.path or not os.path.isdir(spec.path):
        raise SystemExit(f"transformers model folder not found: {spec.path}")
    n_threads = spec.threads or threads
    if n_threads:
        torch.set_num_threads(n_threads)
    device = pick_device(spec.device, torch.cuda.is_available())
    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported()
    return device, getattr(torch, pick_dtype_name(spec.dtype, device, bf16_ok))


class TransformersEngine:
    def __init__(self, spec: ModelSpec, *, threads: int | None) -> None:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        tf: Any = transformers  # transformers is only partly typed

        self.spec = spec
        self.device, self.dtype = torch_placement(spec, threads)
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        quantized = spec.quantization != "none"
        if quantized:
            if self.device != "cuda":
                raise SystemExit(
                    f"quantization {spec.quantization} needs bitsandbytes on a CUDA device; "
                    f"this model would run on {self.device}: set quantization: none"
                )
            kwargs["quantization_config"] = tf.BitsAndBytesConfig(
                load_in_8bit=spec.quantization == "8bit",
                load_in_4bit=spec.quantization == "4bit",
                bnb_4bit_compute_dtype=self.dtype,
            )
            kwargs["device_map"] = self.device
        mapped = spec.device_map is not None and self.device == "cuda"
        if mapped:  # accelerate spreads the layers over the GPU and the CPU (partial offload)
            kwargs["device_map"] = spec.device_map
            if spec.max_memory:
                kwargs["max_memory"] = {int(k) if k.isdigit() else k: v for k, v in spec.max_memory.items()}
        config = tf.AutoConfig.from_pretrained(spec.path)
        self.vision = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if self.vision:
            self.processor: Any = tf.AutoProcessor.from_pretrained(spec.path)
            self.tokenizer: Any = self.processor.tokenizer
            model: Any = tf.AutoModelForImageTextToText.from_pretrained(spec.path, **kwargs)
        else:
            self.tokenizer = tf.AutoTokenizer.from_pretrained(spec.path)
            self.processor = self.tokenizer
            model = tf.AutoModelForCausalLM.from_pretrained(spec.path, **kwargs)
        if spec.chat_template:
            self.processor.chat_template = spec.chat_template
        self.model: Any = model.eval() if quantized or mapped else model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None}
        self.takes_tools = reads_tools(template_texts(self.processor, self.tokenizer))

    def _conversation(self, messages: list[Message]) -> list[dict[str, Any]]:
        conversation: list[dict[str, Any]] = []
        for message in messages:
            entry: dict[str, Any] = {"role": message.role}
            if not self.vision:
                if message.has_images:
                    raise UnsupportedCapability(f"model {self.spec.name} is text-only and cannot read images")
                entry["content"] = message.text
            else:
                content: list[dict[str, Any]] = []
                for part in message.parts:
                    if isinstance(part, TextPart):
                        content.append({"type": "text", "text": part.text})
                    elif isinstance(part, ImageInput | ImagePart):
                        content.append({"type": "image", "image": _open_image(part.data)})
                entry["content"] = content
            if message.tool_calls:  # HF templates take the arguments as a mapping (they dump it themselves)
                entry["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                    for c in message.tool_calls
                ]
            if message.role == "tool":
                entry.update(tool_call_id=message.tool_call_id, name=message.name)
            conversation.append(entry)
        return conversation

    def check_tools(self, tools: Tools) -> None:
        """A 400 before any work for what this engine cannot do with `tools`."""
        if not self.takes_tools:
            raise BadRequest(
                f"model '{self.spec.name}': its chat template has no tool support (it never reads `tools`); "
                "set a chat_template that does",
                param="tools",
            )
        if tools.forced:
            raise BadRequest(
                f"model '{self.spec.name}': the transformers engine cannot force a tool call "
                "(tool_choice 'required' or a named function); use 'auto'",
                param="tool_choice",
            )

    def prompt_ids(self, messages: list[Message], tools: Tools | None = None) -> list[int]:
        """The prompt's token ids as generate builds them (for tests and tools)."""
        return [int(i) for i in self._inputs(messages, tools)["input_ids"][0].tolist()]

    def _inputs(self, messages: list[Message], tools: Tools | None = None) -> Any:
        conversation = self._conversation(messages)
        extra: dict[str, Any] = {}
        if tools is not None and tools.specs:
            self.check_tools(tools)
            extra["tools"] = [tool_to_wire(t) for t in tools.specs]
        try:
            inputs = self.processor.apply_chat_template(
                conversation,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                **extra,
            )
        except ValueError as exc:  # no chat template, wrong image count, ...
            raise EngineError(f"cannot build the prompt: {exc}") from exc
        if self.vision:
            return inputs.to(self.device, dtype=self.dtype)
        return inputs.to(self.device)

    def _generate_kwargs(self, sampling: SamplingParams) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens or DEFAULT_MAX_TOKENS}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        if sampling.temperature:
            kwargs.update(do_sample=True, temperature=sampling.temperature)
            if sampling.top_p is not None:
                kwargs["top_p"] = sampling.top_p
            if sampling.top_k is not None:
                kwargs["top_k"] = sampling.top_k
        else:
            kwargs["do_sample"] = False
        if sampling.repeat_penalty is not None:
            kwargs["repetition_penalty"] = sampling.repeat_penalty
        pad = self.tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else next(iter(self.eos_ids), None)
        return kwargs

    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event, tools: Tools | None = None
    ) -> Iterator[ChatChunk]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self._inputs(messages, tools)
        calls = ToolTextSplitter() if tools is not None and tools.specs and tools.choice != "none" else None
        prompt_tokens = int(inputs["input_ids"].shape[1])
        kwargs = self._generate_kwargs(sampling)
        halt = threading.Event()  # set by us: stop string seen, or the consumer went away

        class _Halt(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                done = cancel.is_set() or halt.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        streamer: Any = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with torch.inference_mode():
                    result["out"] = self.model.generate(
                        **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Halt()]), **kwargs
                    )
            except BaseException as exc:  # re-raised in the consumer's thread
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, name="transformers-generate", daemon=True)
        thread.start()
        buffer = _StopBuffer(sampling.stop)
        try:
            for piece in streamer:
                text = buffer.push(piece)
                text = calls.push(text) if calls is not None else text
                if text:
                    yield ChatChunk(text=text)
                if buffer.stopped or cancel.is_set():
                    halt.set()
                    for _ in streamer:  # drain until generate has returned
                        pass
                    break
        finally:
            halt.set()
            thread.join()
        if "error" in result:
            raise EngineError(f"generation failed: {result['error']}") from result["error"]
        generated = result["out"][0, prompt_tokens:].tolist()
        finish: FinishReason = "stop"
        if not buffer.stopped and not cancel.is_set():
            tail = buffer.flush()
            if calls is not None:
                tail = calls.push(tail)
            if tail:
                yield ChatChunk(text=tail)
            ended_on_eos = bool(generated) and generated[-1] in self.eos_ids
            if len(generated) >= kwargs["max_new_tokens"] and not ended_on_eos:
                finish = "length"
        if calls is not None:  # a stop string may end a call too: read what was held either way
            rest, found = calls.finish()
            if rest:
                yield ChatChunk(text=rest)
            if found:
                deltas = [ToolCallDelta(i, id=c.id, name=c.name, arguments=c.arguments) for i, c in enumerate(found)]
                yield ChatChunk(tool_calls=deltas)
                finish = "tool_calls"
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(generated))
        yield ChatChunk(finish_reason=finish, usage=usage)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise NotImplementedError("the transformers engine serves chat models; use onnx-embed for embeddings")
