"""The embedded SmolLM2's defaults answer the README's quick-start questions: a request without a system
message gets the template's short-answer system prompt (SmolLM2's own default answered "What is the capital of
France?" with "L'Étoile, la Marseillaise, la femme au martyre, ..." and looped). Greedy by default: one answer."""

from __future__ import annotations

import httpx
from server_process import ServerProcess


def test_the_readme_questions_get_right_answers(server: ServerProcess) -> None:
    france = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    openai = httpx.post(server.url + "/v1/chat/completions", json=france, timeout=120)
    assert openai.status_code == 200, openai.text
    assert openai.json()["choices"][0]["message"]["content"] == "The capital of France is Paris."
    assert openai.json()["choices"][0]["finish_reason"] == "stop"
    water = {"model": "smollm2", "stream": False,
             "messages": [{"role": "user", "content": "What is water made of?"}]}  # fmt: skip
    ollama = httpx.post(server.url + "/api/chat", json=water, timeout=120)
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["message"]["content"] == "Water is made up of two hydrogen atoms and one oxygen atom."


def test_a_system_message_replaces_the_default(server: ServerProcess) -> None:
    """The default applies only where the request has no system message of its own."""
    question = {"role": "user", "content": "What is the capital of France?"}
    own = {"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}
    body = {"model": "smollm2", "max_tokens": 12, "messages": [own, question]}
    answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("L'Étoile")  # SmolLM2's own default's answer
