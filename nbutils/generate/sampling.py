"""Stage 01: N responses per prompt, in shards, in the workbook's generations schema."""
from __future__ import annotations

import time

import pandas as pd

from nbutils.chat import prompt_ids
from nbutils.generate.backends import load_backend, pick_backend, sampling_seeds, timed_generate
from nbutils.parallel import placement_free
from nbutils.shards import run_sharded, write_parquet, write_shards

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
    workers: ``nbutils.parallel``), the model and the kept prompts."""
    return {**placement_free(p), "model": model, "prompt_ids": [rows[i]["prompt_id"] for i in keep]}


def generate_responses(stage, prompts, model: str, out_path, backend=None, progress: bool = True,
                       shards: list[int] | None = None):
    """Sample ``num_samples`` responses for every prompt and write ``out_path``.
    Returns (DataFrame, stats). Resumes from finished shards in ``<out>.shards/``; the engine is
    loaded for the first unfinished shard (a rerun with every shard done starts none).
    ``backend``: an already loaded one to reuse (benchmarks), else one is loaded. ``shards``: one
    worker's part of several (:func:`generate_over_workers`): only these shards, into a folder the
    parent made fresh; returns (None, this worker's timings and new tokens)."""
    p, t0 = stage.params, time.perf_counter()
    name = backend.name if backend else pick_backend(p["backend"])
    tokenizer = backend.tokenizer if backend else chat_tokenizer(model)
    rows = prompts.to_list()
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

    fingerprint = shard_fingerprint(p, model, rows, keep)
    if shards is not None:
        size = p["shard_size"]
        write_shards({i: keep[i * size: (i + 1) * size] for i in shards}, f"{out_path}.shards", fingerprint, work)
        return None, {"load_seconds": load_s, "engine_seconds": engine_s, "new_tokens": drawn}
    df, resumed = run_sharded(keep, p["shard_size"], f"{out_path}.shards", fingerprint, work,
                              desc=f"sampling {p['num_samples']} per prompt ({name})" if progress else None)
    write_parquet(df, out_path)
    stats = summarize(df, skipped_long=len(rows) - len(keep))
    stats.update(backend=name, model=model, load_seconds=round(load_s, 2),
                 engine_seconds=round(engine_s, 2), shards_resumed=resumed,
                 stage_seconds=round(time.perf_counter() - t0, 2))
    if engine_s:
        stats["new_tokens_per_second"] = round(stats["response_tokens"] / engine_s, 1)
    return df, stats


def chat_tokenizer(model: str):
    """The model's tokenizer (its chat template), as the engines load it (HF files)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model)


def _generate_in_child(jobs: list[tuple[dict, str]], rows: list[dict], model: str):
    from types import SimpleNamespace

    from nbutils.logs import quiet
    quiet()  # what the child prints goes to its log file; its progress is shown by the parent

    from datasets import Dataset
    return [generate_responses(SimpleNamespace(params=params), Dataset.from_list(rows), model, out_path,
                               progress=False) for params, out_path in jobs]


def generate_in_child(params: dict, prompts, model: str, out_path, desc: str = "sampling") -> tuple[pd.DataFrame, dict]:
    """:func:`generate_responses` in a process of its own, which ends when it is done: an
    engine's memory (vLLM's KV cache, the GPU) is given back reliably only when its process
    ends, and the next stage or model needs it. The progress bar is the parent's: it counts the
    child's finished shards."""
    return generate_jobs_in_child([(params, out_path)], prompts, model, desc)[0]


def generate_jobs_in_child(jobs: list[tuple[dict, str]], prompts, model: str, desc: str = "sampling") -> list:
    """Several (params, out_path) samplings of one model and prompts, one after the other in one
    child process: the engine starts once (the jobs differ in sampling settings only). With more than
    one worker (``devices`` / ``tensor_parallel_size``): :func:`generate_over_workers`."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from nbutils.parallel import check_tensor_parallel, workers_of
    from nbutils.processes import in_child, refuse_if_running
    from nbutils.workers import earlier_workers
    check_tensor_parallel(model, jobs[0][0].get("tensor_parallel_size", 1))
    visible = workers_of(jobs[0][0])
    if len(visible) > 1:
        return generate_over_workers(jobs, prompts, model, desc, visible)
    refuse_if_running(earlier_workers(jobs[0][1]))  # an earlier attempt's workers, whatever their number
    total = len(prompts) * len(jobs)
    with tqdm(total=total, desc=desc, unit="prompt") as bar:
        def poll():
            bar.n = sum(min(len(prompts), p["shard_size"] * len(list(Path(f"{out}.shards").glob("shard-*.parquet"))))
                        for p, out in jobs)
            bar.refresh()
        result = in_child(_generate_in_child, [(p, str(out)) for p, out in jobs], prompts.to_list(), model,
                          poll=poll, log=Path(jobs[0][1]).with_suffix(".log"))
        bar.n = total
        bar.refresh()
    return result


def _generate_in_worker(tasks: list[tuple[int, dict, str, list[int]]], rows: list[dict], model: str) -> dict:
    from types import SimpleNamespace

    from nbutils.logs import quiet
    quiet()

    from datasets import Dataset
    prompts = Dataset.from_list(rows)
    return {j: generate_responses(SimpleNamespace(params=params), prompts, model, out_path, progress=False,
                                  shards=shards)[1] for j, params, out_path, shards in tasks}


def generate_over_workers(jobs: list[tuple[dict, str]], prompts, model: str, desc: str,
                          visible: list[str]) -> list:
    """:func:`generate_jobs_in_child` over one worker process per entry of ``visible`` (its
    ``CUDA_VISIBLE_DEVICES``; on the CPU, its share of the cores), each with an engine of its own:
    this process makes each job's shard folder fresh and deals the pending shards
    (``nbutils.parallel.deal``), the workers sample them (each shard seeded by its index, so the
    draws do not depend on the worker), and this process assembles the output in shard order: the
    rows one worker would have written. Stats as one worker's, with ``workers``; ``engine_seconds``
    and ``load_seconds`` are the longest worker's."""
    from nbutils.devices import resolve_device
    from nbutils.parallel import deal, worker_envs
    from nbutils.shards import done_shards, pending_shards, read_shards
    from nbutils.workers import work_over

    t0, rows, tokenizer = time.perf_counter(), prompts.to_list(), chat_tokenizer(model)
    kept = [kept_prompts(p, tokenizer, rows)[1] for p, _ in jobs]
    pending = [pending_shards(len(keep), p["shard_size"], f"{out}.shards", shard_fingerprint(p, model, rows, keep))
               for (p, out), keep in zip(jobs, kept)]
    dealt = [deal(todo, len(visible)) for todo in pending]
    tasks = [[(j, p, str(out), dealt[j][k]) for j, (p, out) in enumerate(jobs) if dealt[j][k]]
             for k in range(len(visible))]
    parts = work_over(_generate_in_worker, [(t, rows, model) if t else None for t in tasks],
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
