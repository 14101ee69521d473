"""How well the embedded SmolLM2 answers simple questions under each default system prompt.

    .venv/bin/python bench/embedded_defaults.py [--max-tokens 48]

One llama.cpp runner of the embedded SmolLM2 (its catalog spec and chat template), greedy decoding. Each
question is asked twice: with no system message (the template's default, "You are a helpful assistant. Give
short, correct answers.") and with SmolLM2's own default system prompt sent explicitly. An answer counts as
right when it contains one of the accepted words (case-insensitive). Printed: right answers per prompt, and the
questions where the two disagree. This is how the template's default was chosen (README, Quick start).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vlmserve.runners.lifecycle import READY_PREFIX  # noqa: E402
from vlmserve.service.catalog import embedded_specs  # noqa: E402

SMOLLM2_OWN_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of England?", ("london",)),
    ("What is water made of?", ("hydrogen",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("What colour is grass?", ("green",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("How many days are in a week?", ("seven", "7")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("How many continents are there?", ("seven", "7")),
    ("What is 2 plus 2?", ("4", "four")),
    ("What is 2 + 2?", ("4", "four")),
    ("What is 3 + 5?", ("8", "eight")),
    ("What is 10 minus 3?", ("7", "seven")),
    ("Which planet do we live on?", ("earth",)),
    ("What is the largest planet in the solar system?", ("jupiter",)),
    ("What star is at the centre of our solar system?", ("sun",)),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("Which ocean is the largest?", ("pacific",)),
]


def start_runner(stack: ExitStack) -> str:
    spec = next(spec for spec in embedded_specs() if spec.name == "smollm2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmserve.runners", "--spec", spec.model_dump_json()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    stack.callback(proc.wait, 30)
    stack.callback(proc.stdin.close)  # type: ignore[union-attr]
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()
    raise RuntimeError("the runner exited before it was ready")


def ask(http: httpx.Client, question: str, system: str | None, max_tokens: int) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    body = {"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    answer = http.post("/v1/chat/completions", json=body)
    answer.raise_for_status()
    return str(answer.json()["choices"][0]["message"]["content"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with ExitStack() as stack:
        http = stack.enter_context(httpx.Client(base_url=start_runner(stack), timeout=120))
        right = {"template default": 0, "SmolLM2's own": 0}
        disagreements = []
        for question, accepted in QUESTIONS:
            ours = ask(http, question, None, args.max_tokens)
            theirs = ask(http, question, SMOLLM2_OWN_DEFAULT, args.max_tokens)
            ours_right = any(word in ours.lower() for word in accepted)
            theirs_right = any(word in theirs.lower() for word in accepted)
            right["template default"] += ours_right
            right["SmolLM2's own"] += theirs_right
            if ours_right != theirs_right:
                disagreements.append((question, ours, theirs))
    for name, count in right.items():
        print(f"{name:>18}: {count}/{len(QUESTIONS)} right")
    for question, ours, theirs in disagreements:
        print(f"\n{question}\n  template default: {ours[:100]!r}\n  SmolLM2's own:    {theirs[:100]!r}")


if __name__ == "__main__":
    main()
