"""Speech engine: a Hugging Face speech-to-text folder (Whisper-style) on transformers, behind the chat wire.

Loads with AutoProcessor + AutoModelForSpeechSeq2Seq. Audio reaches it as OpenAI `input_audio` parts (16 kHz
mono WAV, prepared by the gateway's media pipeline); the answer is the transcript of every audio part in the
conversation. Long audio is cut into the feature extractor's window (30 s for Whisper) and transcribed piece by
piece, one chunk per piece, so the cancel event is honoured between pieces.
The transcription options reach Whisper's generate: `language` (checked against the model's language tokens;
an English-only model takes only "en") and the prompt, as `prompt_ids` from the processor (its last
`max_target_positions // 2 - 1` tokens, as OpenAI's Whisper keeps), which conditions every window.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import AudioInput, AudioPart, ChatChunk, FinishReason, Message, SamplingParams, Usage
from vlmserve.errors import BadRequest
from vlmserve.media.audio import SAMPLE_RATE, AudioLimits, Samples, decode_audio
from vlmserve.runners.transformers_engine import DEFAULT_MAX_TOKENS, torch_placement

# the gateway already enforced the configured limits; this only guards the runner against nonsense
_RUNNER_LIMITS = AudioLimits(max_bytes=2**31, max_seconds=24 * 3600.0)


def is_speech_folder(path: str | None) -> bool:
    """True for a folder whose config.json names a speech-to-text (seq2seq) architecture."""
    if not path:
        return False
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            model_type = json.load(f).get("model_type", "")
    except (OSError, ValueError):
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

    return model_type in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES


def audio_of(messages: list[Message]) -> list[Samples]:
    samples: list[Samples] = []
    for message in messages:
        for part in message.parts:
            if isinstance(part, AudioInput | AudioPart):
                samples.append(decode_audio(part.data, _RUNNER_LIMITS))
    return samples


class SpeechEngine:
    def __init__(self, spec: ModelSpec, *, threads: int | None) -> None:
        import transformers

        tf: Any = transformers  # transformers is only partly typed
        self.spec = spec
        self.device, self.dtype = torch_placement(spec, threads)
        self.processor: Any = tf.AutoProcessor.from_pretrained(spec.path)
        model: Any = tf.AutoModelForSpeechSeq2Seq.from_pretrained(spec.path, dtype=self.dtype)
        self.model: Any = model.to(self.device).eval()
        extractor = self.processor.feature_extractor
        self.window = int(getattr(extractor, "n_samples", 30 * SAMPLE_RATE))
        self.max_positions = int(getattr(self.model.config, "max_target_positions", 448))
        tokenizer = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos_ids, tokenizer.eos_token_id] if i is not None}

    def _language(self, language: str) -> str | None:
        """The language to hand to generate (None: the model's only one), or BadRequest when it has no token."""
        code = language.strip().lower()
        generation = self.model.generation_config
        known: dict[str, int] = getattr(generation, "lang_to_id", None) or {}
        if not getattr(generation, "is_multilingual", bool(known)) or not known:
            if code == "en":  # an English-only model (whisper-*.en) transcribes English without being told
                return None
            raise BadRequest(f"model '{self.spec.name}' transcribes English only, not language '{language}'",
                             param="language")  # fmt: skip
        if f"<|{code}|>" not in known:
            codes = ", ".join(sorted(token.strip("<|>") for token in known))
            raise BadRequest(f"model '{self.spec.name}' does not know language '{language}' (it knows: {codes})",
                             param="language")  # fmt: skip
        return code

    def _prompt_ids(self, prompt: str) -> Any:
        """`<|startofprev|>` + the prompt's last tokens: the decoder reads them before the audio's tokens."""
        ids = self.processor.get_prompt_ids(prompt, return_tensors="pt")
        keep = self.max_positions // 2 - 1
        if len(ids) > keep + 1:
            ids = ids[[0, *range(len(ids) - keep, len(ids))]]
        return ids.to(self.device)

    def _generate_kwargs(self, sampling: SamplingParams) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {}
        if sampling.language:
            language = self._language(sampling.language)
            if language is not None:
                kwargs["language"] = language
        if sampling.transcript_prompt and sampling.transcript_prompt.strip():
            kwargs["prompt_ids"] = self._prompt_ids(sampling.transcript_prompt)
        prompt = len(kwargs["prompt_ids"]) if "prompt_ids" in kwargs else 0
        # generate refuses prompt + start/language/task/no-timestamps tokens + new tokens > max_target_positions
        limit = max(1, self.max_positions - prompt - 8)
        kwargs["max_new_tokens"] = min(sampling.max_tokens or DEFAULT_MAX_TOKENS, limit)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        if sampling.temperature:
            kwargs.update(do_sample=True, temperature=sampling.temperature)
        return kwargs

    def _transcribe(self, samples: Samples, kwargs: dict[str, Any]) -> tuple[str, int, bool]:
        """The text of one window, its number of generated tokens, and whether it was cut by max_new_tokens."""
        import torch

        features = self.processor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = features["input_features"].to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.model.generate(inputs, **kwargs)
        ids: list[int] = out[0].tolist()
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
        start = 1 if ids and ids[0] == self.model.generation_config.decoder_start_token_id else 0
        tokens = len(ids) - start
        return str(text).strip(), tokens, bool(ids) and ids[-1] not in self.eos_ids

    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event
    ) -> Iterator[ChatChunk]:
        audio = audio_of(messages)
        if not audio:
            raise BadRequest(f"model '{self.spec.name}' transcribes audio: send an input_audio part")
        kwargs = self._generate_kwargs(sampling)
        tokens = 0
        first = True
        finish: FinishReason = "stop"
        for samples in audio:
            for start in range(0, len(samples), self.window):
                if cancel.is_set():
                    break
                text, used, cut = self._transcribe(samples[start : start + self.window], kwargs)
                tokens += used
                if cut:
                    finish = "length"
                if text:
                    yield ChatChunk(text=text if first else " " + text)
                    first = False
        yield ChatChunk(finish_reason=finish, usage=Usage(prompt_tokens=0, completion_tokens=tokens))

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise NotImplementedError("speech models do not embed text")
