"""A tiny text model (random Llama, 2 layers) taught offline to call a tool, for the transformers tools path.

Its chat template shows `tools` in the Hermes / Qwen form and asks for `<tool_call>{json}</tool_call>`; the
model is trained (a few seconds on CPU) on the exact prompts that vlmserve's transformers engine renders for
two conversations, so greedy decoding answers them with what a tool-calling model would:
- WEATHER_ASK with WEATHER_TOOL -> CALL_TEXT (one call of get_weather, CALL_ARGUMENTS);
- that, the call and TOOL_RESULT -> FINAL_ANSWER.
Anything else gives gibberish. The folder is cached like tiny_models' (a `.done` file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Message, TextPart, ToolCall, Tools, ToolSpec

TOOLS_TEMPLATE = (
    "{% if tools %}<|system|>\nYou may call these tools:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n"
    'Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call></s>\n{% endif %}'
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and message.get('tool_calls') %}<|assistant|>\n"
    "{% for call in message['tool_calls'] %}<tool_call>\n"
    "{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}\n"
    "</tool_call>{% endfor %}</s>\n"
    "{% elif message['role'] == 'tool' %}<|tool|>\n<tool_response>\n{{ message['content'] }}\n</tool_response></s>\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WEATHER_ASK = "Weather in Paris?"
CALL_ARGUMENTS = {"city": "Paris"}
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TOOL_RESULT = "sunny, 21 C"
FINAL_ANSWER = "It is sunny in Paris."


def conversations() -> list[tuple[list[Message], str]]:
    """The two (history, answer) pairs the model learns."""
    ask = Message(role="user", parts=[TextPart(WEATHER_ASK)])
    call = ToolCall(id="call_0", name="get_weather", arguments=orjson.dumps(CALL_ARGUMENTS).decode())
    called = Message(role="assistant", parts=[], tool_calls=[call])
    result = Message(role="tool", parts=[TextPart(TOOL_RESULT)], tool_call_id="call_0", name="get_weather")
    return [([ask], CALL_TEXT), ([ask, called, result], FINAL_ANSWER)]


def tools() -> Tools:
    return Tools(specs=[WEATHER_TOOL])


def build_tiny_tool_model(dest: Path) -> Path:
    """The trained folder in `dest` (reused when already built); returns `dest`."""
    import torch
    import transformers
    from tiny_models import _build_tokenizer

    from vlmserve.runners.transformers_engine import TransformersEngine

    tf: Any = transformers
    if (dest / ".done").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(dest)
    tokenizer = tf.AutoTokenizer.from_pretrained(dest)
    tokenizer.chat_template = TOOLS_TEMPLATE
    tokenizer.save_pretrained(dest)
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    engine = TransformersEngine(
        ModelSpec(name="tiny-tools", engine="transformers", path=str(dest), device="cpu"), threads=2
    )
    rows = []
    for history, answer in conversations():
        prompt = engine.prompt_ids(history, tools())
        target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((torch.tensor([prompt + target]), len(prompt)))
    _train(engine.model, rows)
    engine.model.save_pretrained(dest)
    for ids, start in rows:  # greedy decoding now gives the answers
        out = engine.model.generate(ids[:, :start], max_new_tokens=80, do_sample=False)
        text, answer = tokenizer.decode(out[0, start:]), tokenizer.decode(ids[0, start:])
        if text != answer:
            raise RuntimeError(f"tiny tool model did not learn its answer: {text!r} != {answer!r}")
    (dest / ".done").write_text("ok\n")
    return dest


def _train(model: Any, rows: list[tuple[Any, int]], steps: int = 600) -> None:
    import torch

    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        optimiser.zero_grad()
        total = 0.0
        right = True
        for ids, start in rows:
            logits = model(input_ids=ids).logits[0, start - 1 : -1]
            loss = torch.nn.functional.cross_entropy(logits, ids[0, start:])
            loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
            right = right and bool((logits.argmax(-1) == ids[0, start:]).all())
        if right and step > 20 and total < 0.05:
            break
        optimiser.step()
    model.eval()
