"""One prompt up close, for notebook 02: its K answers, the ranker's K×K matrix of pairwise
logits, and the pair the run's ``pair_selection`` makes of them.

PairRM reads (prompt, answer i, answer j) and gives a logit, > 0 when it prefers i. llm-blender
scores answer i by ``mean over j of (M[i, j] − M[j, i])`` (``get_scores_from_cmps``): the
notebook computes that from the matrix and checks it against the scores stage 02 stored. PairRM
runs in a worker process, as stage 02's scoring does, so its memory goes back when it ends. A
pointwise ranker (a reward model, a function, ``self``) scores each answer alone: its matrix is
the score differences ``s_i − s_j``, and its scores are its own.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from nbutils.rerank.pairs import select_pairs
from nbutils.rerank.rankers import is_pairrm, load_ranker


def example(pairs: pd.DataFrame) -> pd.DataFrame:
    """The first prompt of ``pairs`` (stage 02's split) whose answers are all non-empty: one row per
    answer, with its stored score; ``attrs``: the prompt and its id."""
    for row in pairs.drop_duplicates("prompt_id").itertuples():
        answers = list(row.all_generated_responses)
        if all(a.strip() for a in answers) and len(answers) > 1:
            table = pd.DataFrame({"answer": answers, "chars": [len(a) for a in answers],
                                  "stored score": [float(s) for s in row.all_rm_scores]})
            table.attrs = {"prompt": row.prompt, "prompt_id": row.prompt_id}
            return table
    raise ValueError("no prompt in these pairs has all its answers non-empty: nothing to show")


def _pairrm_matrix(ranker: str, device: str, prompt: str, answers: list[str]) -> np.ndarray:
    """In the worker: llm-blender's ``_full_predict`` on one prompt, as ``Blender.rank`` batches it."""
    import torch

    from nbutils.logs import quiet
    quiet()
    blender = load_ranker(ranker, device).blender
    from llm_blender.blender.blender_utils import RankerDataset
    batch = blender.ranker_collator([RankerDataset([prompt], [answers])[0]])
    batch = {k: v.to(device) for k, v in batch.items() if v is not None}
    with torch.no_grad():
        return blender.ranker._full_predict(**batch)["logits"][0].float().cpu().numpy()


def matrix(stage, answers: pd.DataFrame) -> np.ndarray:
    """The K×K matrix for :func:`example`'s answers: PairRM's logits (``M[i, i]`` = 0), computed in a
    worker; a pointwise ranker's score differences."""
    if not is_pairrm(stage["ranker"]):
        s = answers["stored score"].to_numpy()
        return s[:, None] - s[None, :]
    from nbutils.exec.placement import worker_devices, worker_envs
    from nbutils.exec.processes import run_workers
    envs = worker_envs(worker_devices(1), stage.device)
    args = (stage["ranker"], stage.device, answers.attrs["prompt"], list(answers["answer"]))
    return run_workers(_pairrm_matrix, [args], envs, [stage.iter_dir / "02_comparisons.worker-0.log"])[0]


def picked(stage, answers: pd.DataFrame) -> list[str]:
    """Each answer's part in the pairs ``pair_selection`` makes: chosen, rejected, both, or none."""
    row = {"prompt_id": answers.attrs["prompt_id"], "all_generated_responses": list(answers["answer"]),
           "all_rm_scores": list(answers["stored score"])}
    pairs, _ = select_pairs([row], stage["pair_selection"], stage["seed"], stage.params)
    roles = [[] for _ in range(len(answers))]
    for pair in pairs:
        roles[pair["chosen_index"]].append("chosen")
        roles[pair["rejected_index"]].append("rejected")
    return [", ".join(f"{r} ×{part.count(r)}" if part.count(r) > 1 else r for r in dict.fromkeys(part))
            for part in roles]
