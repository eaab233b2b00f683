"""The self-rewarding judge (``ranker: self``, ``judge: self``): a causal LM rates each (instruction,
answer) on the additive 5-point rubric of Yuan et al. 2024, "Self-Rewarding Language Models"
(arXiv:2401.10020, Figure 2), shortened so that rubric, instruction and answer fit a 135M model's
attention span.

The paper samples a judgment (a justification ending "Score: <n>") and parses the number. This judge
reads the distribution instead: the prompt ends with the assistant prefill ``Score: ``, so the next
token is the rating, and the score is the expected rating under the softmax restricted to the five
digit tokens. That is deterministic (no sampling, no unparseable replies), costs one forward pass,
and is a real number in [1, 5], so two answers rarely tie.

Which model judges for a stage, and the label that names it: :mod:`nbutils.rerank.judges`.
"""
from __future__ import annotations

import numpy as np

from nbutils.chat import prompt_ids
from nbutils.rerank.pointwise import PointwiseRanker, RankerError, truncated_rows
from nbutils.sources.kinds import SELF

RUBRIC = (
    "Review the user's question and the response using the additive 5-point scoring system below.\n"
    "- Add 1 point if the response is relevant and gives some information related to the question.\n"
    "- Add another point if it addresses a substantial part of the question.\n"
    "- Award a third point if it answers the basic elements of the question in a useful way.\n"
    "- Grant a fourth point if it addresses the question directly and comprehensively, and is well "
    "organized and helpful.\n"
    "- Bestow a fifth point if it is impeccably tailored to the question, without extraneous "
    "information, reflecting expert knowledge.\n\n"
    "Question: {instruction}\n<response>{answer}</response>\n\n"
    'Conclude with the total score in the format "Score: <total points>".')
PREFILL = "Score: "           # the assistant turn starts with it: the next token is the rating
DIGITS = "12345"
MAX_INSTRUCTION_TOKENS = 300  # longer ones are cut: the rubric, both texts and the prefill stay < 800 tokens
MAX_ANSWER_TOKENS = 300
TOLERANCE = 1e-4              # a score moves less than this with its batch's other rows (fp32, left padding)


class SelfJudge(PointwiseRanker):
    """A causal LM (a model folder) scoring (instruction, answer) by its expected rubric rating."""

    def __init__(self, path: str, device: str, name: str = SELF):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self.prefill = self.tokenizer.encode(PREFILL, add_special_tokens=False)
        self.digits = digit_ids(self.tokenizer, self.prefill, path)
        pad = self.tokenizer.pad_token_id
        self.pad = self.tokenizer.eos_token_id if pad is None else pad
        self.device, self.name, self.memo = device, name, {}

    def cut(self, text: str, limit: int) -> str:
        """``text`` cut to its first ``limit`` tokens (long answers still fit; the judge sees their start)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= limit else self.tokenizer.decode(ids[:limit])

    def judge_prompt(self, instruction: str, answer: str) -> str:
        return RUBRIC.format(instruction=self.cut(instruction, MAX_INSTRUCTION_TOKENS),
                             answer=self.cut(answer, MAX_ANSWER_TOKENS))

    def ids(self, instruction: str, answer: str) -> list[int]:
        """The judge prompt as the chat template gives it (system turn included), then the prefill."""
        return prompt_ids(self.tokenizer, self.judge_prompt(instruction, answer)) + self.prefill

    def rate(self, seqs: list[list[int]]) -> list[float]:
        """Expected ratings of token sequences, one left-padded batch. Position ids count real tokens
        only, so a row reads the same positions whatever its padding."""
        import torch
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):], mask[i, width - len(s):] = torch.tensor(s), 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), logits_to_keep=1).logits[:, -1]
        probs = logits[:, self.digits].float().softmax(-1)
        return (probs @ torch.arange(1, 6, dtype=torch.float32, device=probs.device)).cpu().tolist()

    def score_pairs(self, pairs, start):
        return self.rate([self.ids(p, a) for p, a in pairs])

    def score(self, prompts, candidates, batch_size, desc: str | None = None,
              bucketing: bool = True) -> list[np.ndarray]:
        """Each prompt's candidates' ratings. A (prompt, answer) already rated is not rated again
        (stage 04's reference answers recur for every model); with ``bucketing``, the longest
        sequences are batched together (less padding; a score does not depend on its batch)."""
        from tqdm.auto import tqdm
        flat = [(p, c) for p, cs in zip(prompts, candidates) for c in cs]
        todo = list(dict.fromkeys(k for k in flat if k not in self.memo))
        seqs = [self.ids(*k) for k in todo]
        order = sorted(range(len(todo)), key=lambda i: -len(seqs[i])) if bucketing else list(range(len(todo)))
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=desc is None):
            chunk = order[start: start + batch_size]
            for i, value in zip(chunk, self.rate([seqs[i] for i in chunk])):
                self.memo[todo[i]] = value
        out, pos = [], 0
        for cs in candidates:
            out.append(np.asarray([self.memo[k] for k in flat[pos: pos + len(cs)]], dtype=np.float32))
            pos += len(cs)
        return out

    def truncation(self, prompts, candidates) -> list[dict]:
        def count(texts, kind):
            return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]] if texts else []
        return truncated_rows(count, prompts, candidates, MAX_INSTRUCTION_TOKENS, MAX_ANSWER_TOKENS)


def digit_ids(tokenizer, prefill: list[int], path) -> list[int]:
    """The token ids of 1..5 as they follow the prefill; an error if a rating is not one token there."""
    ids = [tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
    for d, i in zip(DIGITS, ids):
        if tokenizer.encode(PREFILL + d, add_special_tokens=False) != prefill + [i]:
            raise RankerError(f"judge/ranker self: {path}'s tokenizer does not read the rating {d} as one token "
                              f"after {PREFILL!r}, so the rating cannot be read from one next-token distribution; "
                              "use another judge (a reward model, PairRM or module:function)")
    return ids
