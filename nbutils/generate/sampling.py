"""Stage 01: N responses per prompt, in shards, in the workbook's generations schema."""
from __future__ import annotations

import time

import pandas as pd

from nbutils.chat import prompt_ids
from nbutils.generate.backends import load_backend, pick_backend, sampling_seeds, timed_generate
from nbutils.exec.placement import placement_free
from nbutils.store.shards import write_parquet, write_shards

SCHEMA = ["prompt_id", "prompt", "all_generated_responses", "finish_reasons",
          "response_num_tokens", "prompt_num_tokens", "model", "backend", "iteration",
          "temperature", "top_p", "max_new_tokens", "seed"]


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt as one user turn in the model's chat template."""
    return [prompt_ids(tokenizer, p) for p in prompts]


def kept_prompts(p: dict, tokenizer, rows: list[dict]) -> tuple[list[list[int]], list[int]]:
    """Each prompt's chat-templated ids, and the indices of those that leave room for
    ``max_new_tokens`` within ``max_model_len`` (the others are skipped and counted)."""
    ids = chat_prompt_ids(tokenizer, [r["prompt"] for r in rows])
    limit = p["max_model_len"] - p["max_new_tokens"]
    return ids, [i for i, x in enumerate(ids) if len(x) <= limit]


def shard_fingerprint(p: dict, model: str, rows: list[dict], keep: list[int]) -> dict:
    """What the shards depend on: the params but where they run (a run resumes with any number of
    workers: ``nbutils.exec.placement``), the model and the kept prompts."""
    return {**placement_free(p), "model": model, "prompt_ids": [rows[i]["prompt_id"] for i in keep]}


def sample_shards(params: dict, rows: list[dict], model: str, out_path, shards: list[int], backend=None) -> dict:
    """A worker's part of stage 01: sample ``num_samples`` responses for the prompts of each shard
    in ``shards`` (indices into the kept prompts' shards) into ``<out_path>.shards/``, which the
    parent made fresh (:func:`generate_jobs`). The engine loads for the first shard (none when
    ``shards`` is empty); ``backend``: an already loaded one (benchmarks). Returns this worker's
    load and engine seconds and new tokens."""
    p = params
    name = backend.name if backend else pick_backend(p["backend"])
    tokenizer = backend.tokenizer if backend else chat_tokenizer(model)
    ids, keep = kept_prompts(p, tokenizer, rows)
    engine_s, load_s, drawn = 0.0, 0.0, 0

    def work(chunk, shard):
        nonlocal engine_s, load_s, backend, drawn
        if backend is None:
            t = time.perf_counter()
            backend = load_backend(model, p)
            load_s = time.perf_counter() - t
            if chat_prompt_ids(backend.tokenizer, [rows[chunk[0]]["prompt"]])[0] != ids[chunk[0]]:
                raise RuntimeError(f"{model}: the engine's tokenizer and transformers' give other prompt ids")
        seeds = sampling_seeds(p["sampling_seeds"], backend.name, p["seed"], p["iteration"],
                               [rows[i]["prompt_id"] for i in chunk], shard)
        samples, secs = timed_generate(backend, [ids[i] for i in chunk], seeds, p["sampling_seeds"] == "request")
        engine_s += secs
        drawn += sum(x.num_tokens for ss in samples for x in ss)
        return pd.DataFrame([{
            "prompt_id": rows[i]["prompt_id"], "prompt": rows[i]["prompt"],
            "all_generated_responses": [s.text for s in ss],
            "finish_reasons": [s.finish_reason for s in ss],
            "response_num_tokens": [s.num_tokens for s in ss], "prompt_num_tokens": len(ids[i]),
            "model": p["base_model"] if p["iteration"] == 1 else model, "backend": name,
            "iteration": p["iteration"], "temperature": p["temperature"], "top_p": p["top_p"],
            "max_new_tokens": p["max_new_tokens"], "seed": seed,
        } for i, ss, seed in zip(chunk, samples, seeds)], columns=SCHEMA)

    size = p["shard_size"]
    write_shards({i: keep[i * size: (i + 1) * size] for i in shards}, f"{out_path}.shards",
                 shard_fingerprint(p, model, rows, keep), work)
    return {"load_seconds": load_s, "engine_seconds": engine_s, "new_tokens": drawn}


def chat_tokenizer(model: str):
    """The model's tokenizer (its chat template), as the engines load it (HF files)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model)


def _sample_in_worker(tasks: list[tuple[int, dict, str, list[int]]], rows: list[dict], model: str) -> dict:
    from nbutils.logs import quiet
    quiet()  # what a worker prints goes to its log file; its progress is shown by the parent
    return {j: sample_shards(params, rows, model, out_path, shards) for j, params, out_path, shards in tasks}


def generate(params: dict, prompts, model: str, out_path, desc: str = "sampling") -> tuple[pd.DataFrame, dict]:
    """Stage 01: ``num_samples`` responses per prompt from ``model`` into ``out_path`` (and its
    ``.shards/``: a rerun resumes). Returns (DataFrame, stats). :func:`generate_jobs` of one job."""
    return generate_jobs([(params, out_path)], prompts, model, desc)[0]


def generate_jobs(jobs: list[tuple[dict, str]], prompts, model: str, desc: str = "sampling") -> list:
    """Several (params, out_path) samplings of one model and prompts (they differ in sampling
    settings only), each engine started once for all of them, in worker processes
    (``nbutils.exec.processes``): one per group of ``tensor_parallel_size`` of the ``devices`` GPUs
    (on the CPU, a share of the cores each), one for one GPU. An engine's memory (vLLM's KV cache,
    the GPU) is given back reliably only when its process ends, and the next stage or model needs it.
    This process makes each job's shard folder fresh and deals the pending shards
    (``nbutils.exec.placement.deal``), the workers sample them (each shard seeded by its index, so
    the draws do not depend on the worker), and this process assembles the output in shard order:
    the same rows with any number of workers. A rerun with every shard done starts no worker.
    ``engine_seconds`` and ``load_seconds`` are the longest worker's."""
    from nbutils.exec.devices import resolve_device
    from nbutils.exec.placement import check_tensor_parallel, deal, worker_envs, workers_of
    from nbutils.exec.processes import work_over
    from nbutils.store.shards import done_shards, pending_shards, read_shards

    check_tensor_parallel(model, jobs[0][0].get("tensor_parallel_size", 1))
    visible = workers_of(jobs[0][0])
    t0, rows, tokenizer = time.perf_counter(), prompts.to_list(), chat_tokenizer(model)
    kept = [kept_prompts(p, tokenizer, rows)[1] for p, _ in jobs]
    pending = [pending_shards(len(keep), p["shard_size"], f"{out}.shards", shard_fingerprint(p, model, rows, keep))
               for (p, out), keep in zip(jobs, kept)]
    dealt = [deal(todo, len(visible)) for todo in pending]
    tasks = [[(j, p, str(out), dealt[j][k]) for j, (p, out) in enumerate(jobs) if dealt[j][k]]
             for k in range(len(visible))]
    parts = work_over(_sample_in_worker, [(t, rows, model) if t else None for t in tasks],
                      worker_envs(visible, resolve_device(jobs[0][0].get("device", "auto"))), jobs[0][1],
                      done=lambda: sum(min(len(keep), p["shard_size"] * done_shards(f"{out}.shards"))
                                       for (p, out), keep in zip(jobs, kept)),
                      total=sum(map(len, kept)), desc=desc).values()
    results = []
    for j, ((p, out), keep, todo) in enumerate(zip(jobs, kept, pending)):
        df = read_shards(len(keep), p["shard_size"], f"{out}.shards")
        write_parquet(df, out)
        mine = [part[j] for part in parts if j in part]
        engine_s = max((m["engine_seconds"] for m in mine), default=0.0)
        stats = summarize(df, skipped_long=len(rows) - len(keep))
        stats.update(backend=pick_backend(p["backend"]), model=model,
                     load_seconds=round(max((m["load_seconds"] for m in mine), default=0.0), 2),
                     engine_seconds=round(engine_s, 2), shards_resumed=-(-len(keep) // p["shard_size"]) - len(todo),
                     stage_seconds=round(time.perf_counter() - t0, 2), workers=len(visible))
        if engine_s:  # all workers' new tokens over the longest worker's engine time
            stats["new_tokens_per_second"] = round(sum(m["new_tokens"] for m in mine) / engine_s, 1)
        results.append((df, stats))
    return results


def summarize(df: pd.DataFrame, skipped_long: int = 0) -> dict:
    """Counts a user should see: prompts, responses, empty and truncated ones."""
    texts, tokens = df["all_generated_responses"].explode(), df["response_num_tokens"].explode()
    truncated = int((df["finish_reasons"].explode() == "length").sum())
    return {
        "prompts": len(df), "responses": int(texts.size),
        "empty_responses": int((texts.str.strip() == "").sum()),
        "truncated_responses": truncated,
        "truncated_fraction": round(truncated / texts.size, 4) if len(texts) else 0.0,  # cut at max_new_tokens
        "prompts_skipped_too_long": skipped_long,
        "response_tokens": int(tokens.sum()),
        "mean_response_tokens": round(float(tokens.astype(float).mean()), 1) if len(tokens) else 0.0,
        "mean_response_chars": round(float(texts.str.len().mean()), 1) if len(texts) else 0.0,
    }


def examples(df: pd.DataFrame, k: int = 3):
    """One row per response of the first ``k`` prompts, full text, for a quick look."""
    head = df.head(k)[["prompt", "all_generated_responses", "finish_reasons", "response_num_tokens"]]
    table = head.explode(["all_generated_responses", "finish_reasons", "response_num_tokens"]).rename(
        columns={"all_generated_responses": "response", "finish_reasons": "finish",
                 "response_num_tokens": "tokens"}).reset_index(names="prompt #")
    return table.style.set_properties(**{"text-align": "left", "white-space": "pre-wrap"})
