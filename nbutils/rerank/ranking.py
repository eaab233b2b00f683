"""Stage 02: score every response, pick the pairs of each prompt, write the DPO dataset.

Empty responses are not scored (``None`` in ``all_rm_scores``) and never
picked. Scores are written in shards, so a killed run resumes.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.rerank import dataset
from nbutils.rerank.pairs import SELECTION_PARAMS, select_pairs
from nbutils.rerank.rankers import load_ranker
from nbutils.rerank.judges import judge_model, label
from nbutils.store.shards import write_shards
from nbutils.sources.kinds import SELF

REQUIRED = ["prompt_id", "prompt", "all_generated_responses"]


def load_generations(path: Path, iteration: int) -> pd.DataFrame:
    """Stage 01's output, checked: the columns stage 02 needs, responses as lists."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"no generations at {path}: run stage 01_generate for iteration {iteration} first "
            f"(python -m nbutils run -f recipes/<recipe>.yaml --stages 01_generate --iterations {iteration})")
    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected stage 01's schema")
    for i, responses in enumerate(df["all_generated_responses"]):
        if not isinstance(responses, (list, np.ndarray)) or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{path}: row {i} (prompt_id {df['prompt_id'].iloc[i]}): "
                             f"all_generated_responses must be a list of strings")
    return df


def fingerprint(stage, generations: pd.DataFrame) -> dict:
    texts = json.dumps([list(r) for r in generations["all_generated_responses"]])
    return {"ranker": stage["ranker"], "responses_sha256": hashlib.sha256(texts.encode()).hexdigest()}


def score_rows(stage, ranker, rows: list[dict]) -> tuple[pd.DataFrame, float]:
    """One shard's ``all_rm_scores`` (``None`` for empty responses), with how much of each row the
    ranker cut (``truncated_*`` columns, when it cuts: its source and candidate limits), and the
    seconds the ranker took. ``stage``: the Stage, or its params."""
    keep = [[j for j, r in enumerate(row["all_generated_responses"]) if r.strip()] for row in rows]
    t0 = time.perf_counter()
    scored = ranker.score([row["prompt"] for row in rows],
                          [[row["all_generated_responses"][j] for j in k] for row, k in zip(rows, keep)],
                          stage["ranker_batch_size"], bucketing=stage["ranker_bucketing"])
    elapsed = time.perf_counter() - t0
    out = []
    cuts = ranker.truncation([row["prompt"] for row in rows], [list(row["all_generated_responses"]) for row in rows])
    for row, k, s, cut in zip(rows, keep, scored, cuts):
        full = [None] * len(row["all_generated_responses"])
        for j, value in zip(k, s):
            full[j] = float(value)
        out.append({"prompt_id": row["prompt_id"], "all_rm_scores": full,
                    **{f"truncated_{key}": value for key, value in cut.items()}})
    return pd.DataFrame(out), elapsed


def truncation_stats(df: pd.DataFrame) -> dict:
    """The ranker's cuts over all shards: prompts and responses it read in part, and its limits."""
    cut = {c.removeprefix("truncated_"): df[c] for c in df.columns if c.startswith("truncated_")}
    return {k: int(v.sum()) if "maxlength" not in k else int(v.max()) for k, v in cut.items()}


def scores_of(df: pd.DataFrame) -> list:
    return [[None if v is None or np.isnan(v) else float(v) for v in s] for s in df["all_rm_scores"]]


def _score_in_worker(params: dict, device: str, chunks: dict[int, list[dict]], shard_dir: str, stamp: dict,
                     policy: str | None = None, judge_label: str = SELF) -> float:
    """One worker's shards; ``policy``, ``judge_label``: the judging model of ``ranker: self`` (the parent resolved it)."""
    from nbutils.logs import quiet
    quiet()
    ranker, elapsed = load_ranker(params["ranker"], device, policy, judge_label), 0.0

    def work(rows, shard):
        nonlocal elapsed
        df, secs = score_rows(params, ranker, rows)
        elapsed += secs
        return df
    write_shards(chunks, shard_dir, stamp, work)
    return elapsed


def score_responses(stage, generations: pd.DataFrame, shard_dir: Path) -> tuple[list, dict]:
    """``all_rm_scores`` per prompt (``None`` for empty responses) and stats, in worker processes
    (``nbutils.exec.processes``): one per GPU of ``devices`` (on the CPU, a share of the cores each),
    each with a ranker of its own, which it loads only when it has shards to score. This process
    makes the shard folder fresh and deals the pending shards, the workers score them, and this
    process reads them in shard order: the scores of one worker (a prompt's scores do not depend on
    its batch's other prompts)."""
    from nbutils.exec.placement import deal, worker_devices, worker_envs
    from nbutils.exec.processes import work_over
    from nbutils.store.shards import done_shards, pending_shards, read_shards
    rows, stamp = generations.to_dict("records"), fingerprint(stage, generations)
    size, envs = stage["shard_size"], worker_envs(worker_devices(stage["devices"]), stage.device)
    path, model = judge_model(stage) if stage["ranker"] == SELF else (None, None)
    pending = pending_shards(len(rows), size, shard_dir, stamp)
    chunks = [{i: rows[i * size: (i + 1) * size] for i in part} for part in deal(pending, len(envs))]
    seconds = work_over(_score_in_worker, [(stage.params, stage.device, c, str(shard_dir), stamp, path,
                                            f"{SELF} ({model})") if c else None for c in chunks], envs, shard_dir,
                        done=lambda: size * done_shards(shard_dir), total=len(rows), desc="scoring responses")
    df = read_shards(len(rows), size, shard_dir)
    return scores_of(df), {"ranker_seconds": round(max(seconds.values(), default=0.0), 2),
                           "shards_resumed": -(-len(rows) // size) - len(pending), "workers": len(envs),
                           **truncation_stats(df)}


def rerank(stage, generations_path: Path, out_dir: Path) -> tuple[dict, dict]:
    """Score (:func:`score_responses`), select and write the dataset; returns ({split: DataFrame}, stats)."""
    t0, n = time.perf_counter(), stage["iteration"]
    generations = load_generations(generations_path, n)
    scores, stats = score_responses(stage, generations, out_dir.parent / f"{out_dir.name}.scores")
    rows = [{**r, "all_generated_responses": list(r["all_generated_responses"]), "all_rm_scores": s}
            for r, s in zip(generations[REQUIRED].to_dict("records"), scores)]
    selected, skipped = select_pairs(rows, stage["pair_selection"], stage["seed"], stage.params)
    train, test = dataset.split(dataset.snorkel_rows(selected), stage["test_fraction"], stage["seed"])
    splits = {f"train_iteration_{n}": train, f"test_iteration_{n}": test}
    judge = label(stage, stage["ranker"])  # every score names its judge: self names the model that judged
    note = f"Iteration {n}: responses scored by `{judge}`, pairs by `{stage['pair_selection']}`."
    dataset.write_dataset(splits, out_dir, note)
    counts = [len(r) for r in generations["all_generated_responses"]]
    texts = [t for r in rows for t in r["all_generated_responses"]]
    stats = {"prompts": len(rows), "responses": len(texts),
             "empty_responses_not_scored": sum(not t.strip() for t in texts),
             "prompts_with_other_response_counts": sum(c != max(counts) for c in counts) if counts else 0,
             **skipped, "pairs": len(train) + len(test), "train_pairs": len(train), "test_pairs": len(test),
             "paired_prompts": len({r["prompt_id"] for r in selected}),
             **dataset.length_stats(pd.concat([train, test])),
             **stats, "ranker": judge, "pair_selection": stage["pair_selection"],
             "length_penalty": stage["length_penalty"],
             **{k: stage[k] for k in SELECTION_PARAMS.get(stage["pair_selection"], {}) if k != "length_penalty"}}
    if stage["push_to_hub"]:
        stats["pushed_to"] = dataset.push(out_dir, stage["push_to_hub"], note)
    stats["stage_seconds"] = round(time.perf_counter() - t0, 2)
    return splits, stats
