"""The tiny world: instructions and word-level answers the CPU preset learns from.

Everything is generated from templates with a seeded RNG, so the shipped prompt
files (``nbutils/data/tiny_*.jsonl``) can be rebuilt byte for byte with
``python -m nbutils.tiny.corpus``. Answers vary on purpose: on-topic or
drifting to another topic, short or long, plain or listed, polite or not, so a
reward model has something to prefer and DPO something to move.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from nbutils.store.ids import prompt_id

DATA_DIR = Path(__file__).parent.parent / "data"
TRAIN_PROMPTS = DATA_DIR / "tiny_prompts.jsonl"
EVAL_PROMPTS = DATA_DIR / "tiny_eval_prompts.jsonl"
SEED = 20240125

TOPICS = """gardening coffee chess running cooking photography painting swimming
baking cycling astronomy recycling budgeting camping fishing knitting yoga hiking
music poetry history geography chemistry physics biology python databases
networks security robots volcanoes oceans forests deserts rivers weather
sleep nutrition vitamins exercise meditation friendship teamwork leadership
writing reading libraries museums trains airplanes bridges castles dinosaurs
bees whales owls wolves tea bread cheese apples tomatoes""".split()

INSTRUCTIONS = [
    "Give me some tips about {t}.",
    "Explain {t} to a child.",
    "What are the benefits of {t}?",
    "Tell me three facts about {t}.",
    "How do I get started with {t}?",
    "Write a short note about {t}.",
    "Why do people like {t}?",
    "What should a beginner know about {t}?",
    "Describe {t} in simple words.",
    "Can you help me understand {t}?",
    "What is the most important thing about {t}?",
    "Share a useful idea about {t}.",
]

OPENERS = ["Sure!", "Great question.", "Of course.", "Happy to help.", "Here is an answer."]
CLOSERS = ["I hope this helps.", "Enjoy learning more.", "Let me know if you have questions.",
           "Good luck!", "Have fun with it."]
FACTS = [
    "{T} is a wonderful topic to explore.",
    "Many people enjoy {t} every day.",
    "{T} can teach you patience and care.",
    "A good way to learn {t} is to practice a little each week.",
    "Start small with {t} and build simple habits.",
    "{T} is easier when you ask friends for help.",
    "Books and videos about {t} are a great start.",
    "The history of {t} is long and interesting.",
    "Experts say {t} is good for the mind.",
    "With {t}, small steps lead to big results.",
    "Try to keep notes about your progress with {t}.",
    "Safety matters with {t}, so go slowly at first.",
    "{T} connects people who share the same interest.",
    "You can learn {t} at home with simple tools.",
    "Clear goals make {t} more rewarding.",
]
FILLERS = ["That is a good question.", "There are many things to say.", "It depends on many things.",
           "Some people think so.", "This is a common question.", "It is hard to say in general."]


def _fact(rng: random.Random, topic: str) -> str:
    return rng.choice(FACTS).format(t=topic, T=topic.capitalize())


def answer(rng: random.Random, topic: str) -> str:
    """One answer of varying quality: on/off topic, short/long, list/prose, polite or not."""
    on_topic = rng.random() < 0.6
    subject = topic if on_topic else rng.choice([x for x in TOPICS if x != topic])
    n = rng.choice([1, 1, 2, 2, 3, 4, 5, 6])
    body = [_fact(rng, subject) for _ in range(n)]
    if rng.random() < 0.3:
        body = [rng.choice(FILLERS)] + body[: max(1, n // 2)]
    if rng.random() < 0.35 and len(body) > 1:
        body = [f"{i}. {s}" for i, s in enumerate(body, 1)]
    parts = ([rng.choice(OPENERS)] if rng.random() < 0.5 else []) + body
    if rng.random() < 0.4:
        parts.append(rng.choice(CLOSERS))
    return " ".join(parts)


def all_prompts() -> list[dict]:
    """Every (template, topic) instruction once, in a seeded order."""
    rows = [{"prompt": tpl.format(t=t), "topic": t} for t in TOPICS for tpl in INSTRUCTIONS]
    random.Random(SEED).shuffle(rows)
    return [{"prompt_id": prompt_id(r["prompt"]), **r} for r in rows]


def prompt_sets(num_eval: int = 96) -> tuple[list[dict], list[dict]]:
    """(training pool, evaluation set): disjoint instructions."""
    rows = all_prompts()
    return rows[num_eval:], rows[:num_eval]


def sft_corpus(num_examples: int, seed: int) -> list[dict]:
    """(prompt, answer) pairs for the tiny policy's short pre-training."""
    rng = random.Random(seed)
    rows = all_prompts()
    return [{"prompt": r["prompt"], "response": answer(rng, r["topic"])}
            for r in (rng.choice(rows) for _ in range(num_examples))]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    train, evaluation = prompt_sets()
    write_jsonl(train, TRAIN_PROMPTS)
    write_jsonl(evaluation, EVAL_PROMPTS)
    print(f"wrote {len(train)} prompts to {TRAIN_PROMPTS} and {len(evaluation)} to {EVAL_PROMPTS}")


if __name__ == "__main__":
    main()
