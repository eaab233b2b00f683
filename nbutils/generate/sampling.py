"""Stage 01: N responses per prompt, in shards, in the workbook's generations schema."""
from __future__ import annotations

import time

import pandas as pd

from nbutils.generate.backends import load_backend, sampling_seeds, timed_generate
from nbutils.shards import run_sharded, write_parquet

SCHEMA = ["prompt_id", "prompt", "all_generated_responses", "finish_reasons",
          "response_num_tokens", "prompt_num_tokens", "model", "backend", "iteration",
          "temperature", "top_p", "max_new_tokens", "seed"]


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt as one user turn in the model's chat template."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                          add_generation_prompt=True, return_dict=False)
            for p in prompts]


def generate_responses(stage, prompts, model: str, out_path, backend=None, progress: bool = True):
    """Sample ``num_samples`` responses for every prompt and write ``out_path``.
    Returns (DataFrame, stats). Resumes from finished shards in ``<out>.shards/``.
    ``backend``: an already loaded one to reuse (benchmarks), else one is loaded."""
    p, t0 = stage.params, time.perf_counter()
    backend = backend or load_backend(model, p)
    load_s = time.perf_counter() - t0
    rows = prompts.to_list()
    ids = chat_prompt_ids(backend.tokenizer, [r["prompt"] for r in rows])
    limit = p["max_model_len"] - p["max_new_tokens"]
    keep = [i for i, x in enumerate(ids) if len(x) <= limit]
    engine_s = 0.0

    def work(chunk, shard):
        nonlocal engine_s
        seeds = sampling_seeds(backend.name, p["seed"], p["iteration"],
                               [rows[i]["prompt_id"] for i in chunk], shard)
        samples, secs = timed_generate(backend, [ids[i] for i in chunk], seeds)
        engine_s += secs
        return pd.DataFrame([{
            "prompt_id": rows[i]["prompt_id"], "prompt": rows[i]["prompt"],
            "all_generated_responses": [s.text for s in ss],
            "finish_reasons": [s.finish_reason for s in ss],
            "response_num_tokens": [s.num_tokens for s in ss], "prompt_num_tokens": len(ids[i]),
            "model": p["base_model"] if p["iteration"] == 1 else model, "backend": backend.name,
            "iteration": p["iteration"], "temperature": p["temperature"], "top_p": p["top_p"],
            "max_new_tokens": p["max_new_tokens"], "seed": seed,
        } for i, ss, seed in zip(chunk, samples, seeds)], columns=SCHEMA)

    fingerprint = {**p, "model": model, "prompt_ids": [rows[i]["prompt_id"] for i in keep]}
    df, resumed = run_sharded(keep, p["shard_size"], f"{out_path}.shards", fingerprint, work,
                              desc=f"sampling {p['num_samples']} per prompt ({backend.name})" if progress else None)
    write_parquet(df, out_path)
    stats = summarize(df, skipped_long=len(rows) - len(keep))
    stats.update(backend=backend.name, model=model, load_seconds=round(load_s, 2),
                 engine_seconds=round(engine_s, 2), shards_resumed=resumed,
                 stage_seconds=round(time.perf_counter() - t0, 2))
    if engine_s:
        stats["new_tokens_per_second"] = round(stats["response_tokens"] / engine_s, 1)
    return df, stats


def _generate_in_child(params: dict, rows: list[dict], model: str, out_path: str):
    import os
    from types import SimpleNamespace

    from nbutils.logs import quiet
    quiet()  # what the child prints goes to its log file; its progress is shown by the parent

    from datasets import Dataset
    return generate_responses(SimpleNamespace(params=params), Dataset.from_list(rows), model, out_path,
                              progress=False)


def generate_in_child(params: dict, prompts, model: str, out_path, desc: str = "sampling") -> tuple[pd.DataFrame, dict]:
    """:func:`generate_responses` in a process of its own, which ends when it is done: an
    engine's memory (vLLM's KV cache, the GPU) is given back reliably only when its process
    ends, and the next stage or model needs it. The progress bar is the parent's: it counts the
    child's finished shards."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from nbutils.processes import in_child
    shards, size = Path(f"{out_path}.shards"), params["shard_size"]
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        def poll():
            bar.n = min(len(prompts), size * len(list(shards.glob("shard-*.parquet"))))
            bar.refresh()
        result = in_child(_generate_in_child, params, prompts.to_list(), model, str(out_path), poll=poll,
                          log=Path(out_path).with_suffix(".log"))
        bar.n = len(prompts)
        bar.refresh()
    return result


def summarize(df: pd.DataFrame, skipped_long: int = 0) -> dict:
    """Counts a user should see: prompts, responses, empty and truncated ones."""
    texts = df["all_generated_responses"].explode()
    return {
        "prompts": len(df), "responses": int(texts.size),
        "empty_responses": int((texts.str.strip() == "").sum()),
        "truncated_responses": int((df["finish_reasons"].explode() == "length").sum()),
        "prompts_skipped_too_long": skipped_long,
        "response_tokens": int(df["response_num_tokens"].explode().sum()),
        "mean_response_chars": round(float(texts.str.len().mean()), 1) if len(texts) else 0.0,
    }


def examples(df: pd.DataFrame, k: int = 3):
    """One row per response of the first ``k`` prompts, full text, for a quick look."""
    head = df.head(k)[["prompt", "all_generated_responses", "finish_reasons", "response_num_tokens"]]
    table = head.explode(["all_generated_responses", "finish_reasons", "response_num_tokens"]).rename(
        columns={"all_generated_responses": "response", "finish_reasons": "finish",
                 "response_num_tokens": "tokens"}).reset_index(names="prompt #")
    return table.style.set_properties(**{"text-align": "left", "white-space": "pre-wrap"})
