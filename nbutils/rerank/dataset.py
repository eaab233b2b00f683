"""Preference pairs in the Snorkel-Mistral-PairRM-DPO-Dataset schema, as a
``datasets``-loadable parquet folder with splits ``train_iteration_<n>`` and
``test_iteration_<n>`` (what TRL's ``DPOTrainer`` takes: conversational
``prompt``/``chosen``/``rejected``)."""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from nbutils.chat import conversation
from nbutils.store.files import atomic_path

COLUMNS = ["prompt_id", "prompt", "chosen", "rejected", "messages", "score_chosen", "score_rejected",
           "all_generated_responses", "all_rm_scores"]


def card(split_names: list[str], note: str) -> str:
    """A dataset card whose YAML names every split (``load_dataset`` reads it)."""
    files = "".join(f"  - split: {n}\n    path: data/{n}-*.parquet\n" for n in split_names)
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n{files}---\n"
            f"# Preference pairs\n\n{note}\nColumns follow `snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset`.\n")


def split_names(paths: list[str]) -> list[str]:
    """Split names of ``data/<split>-00000-of-00001.parquet`` files, sorted."""
    return sorted({Path(p).name.rsplit("-", 3)[0] for p in paths if p.endswith(".parquet")})


def snorkel_rows(selected: list[dict]) -> pd.DataFrame:
    """Selected rows (with ``chosen_index``/``rejected_index``) in the Snorkel schema: one row per pair
    (a prompt with several pairs has several rows, each with all its responses and scores)."""
    rows = []
    for r in selected:
        responses, scores = list(r["all_generated_responses"]), list(r["all_rm_scores"])
        chosen, rejected = responses[r["chosen_index"]], responses[r["rejected_index"]]
        rows.append({"prompt_id": r["prompt_id"], "prompt": r["prompt"],
                     "chosen": conversation(r["prompt"], chosen),
                     "rejected": conversation(r["prompt"], rejected),
                     "messages": conversation(r["prompt"], chosen),
                     "score_chosen": float(scores[r["chosen_index"]]),
                     "score_rejected": float(scores[r["rejected_index"]]),
                     "all_generated_responses": responses,
                     "all_rm_scores": [None if s is None else float(s) for s in scores]})
    return pd.DataFrame(rows, columns=COLUMNS)


def split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded (train, test) split by ``prompt_id``: the test split gets round(n * fraction) of the n
    prompts with all their pairs (``all_pairs`` gives a prompt several), so no prompt is in both.
    With one pair per prompt this is the split it always was (the same shuffle of the same count)."""
    prompts = list(dict.fromkeys(df["prompt_id"]))
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    held_out = {prompts[i] for i in order[:round(len(prompts) * test_fraction)]}
    test = df["prompt_id"].isin(held_out).to_numpy()
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def write_dataset(splits: dict[str, pd.DataFrame], out_dir: Path, note: str) -> Path:
    """Write ``out_dir/data/<split>-00000-of-00001.parquet`` and a dataset card, atomically."""
    with atomic_path(out_dir) as tmp:
        (tmp / "data").mkdir(parents=True)
        for name, df in splits.items():
            df.to_parquet(tmp / "data" / f"{name}-00000-of-00001.parquet", index=False)
        (tmp / "README.md").write_text(card(list(splits), note))
    return out_dir


def load_split(out_dir: Path, split_name: str):
    """One split as an in-memory ``datasets.Dataset`` (what stage 03 trains on).
    Read directly: ``load_dataset(<folder>)`` caches local folders by their name,
    so two runs' ``preference_data`` folders could load each other's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset
    from datasets.table import InMemoryTable

    files = sorted((Path(out_dir) / "data").glob(f"{split_name}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no split {split_name!r} in {out_dir} (splits: "
                                f"{split_names([str(p) for p in Path(out_dir).glob('data/*.parquet')])})")
    return Dataset(InMemoryTable(pa.concat_tables([pq.read_table(f) for f in files])))


def for_dpo(dataset):
    """The Snorkel schema as TRL's ``DPOTrainer`` takes it: conversational, explicit prompt
    (``prompt`` = the user turn, ``chosen``/``rejected`` = the assistant turns)."""
    def split_turns(row):
        return {"prompt": row["chosen"][:-1], "chosen": row["chosen"][-1:], "rejected": row["rejected"][-1:]}
    return dataset.map(split_turns, remove_columns=dataset.column_names)


def push(out_dir: Path, repo_id: str, note: str) -> str:
    """Add this iteration's splits to a hub dataset repo, keeping the splits already
    there (token from ``HF_TOKEN`` or ``hf auth login``). Returns the repo URL."""
    from huggingface_hub import HfApi
    api = HfApi()
    url = api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    local = [f"data/{p.name}" for p in (out_dir / "data").glob("*.parquet")]
    names = split_names(api.list_repo_files(repo_id, repo_type="dataset") + local)
    api.upload_folder(folder_path=str(out_dir / "data"), path_in_repo="data", repo_id=repo_id,
                      repo_type="dataset", commit_message=f"add {', '.join(split_names(local))}")
    api.upload_file(path_or_fileobj=card(names, note).encode(), path_in_repo="README.md",
                    repo_id=repo_id, repo_type="dataset", commit_message="update dataset card")
    return str(url)


def length_stats(pairs: pd.DataFrame) -> dict:
    """Mean chosen and rejected lengths (chars) and how often the chosen one is longer."""
    chosen = pairs["chosen"].map(lambda m: len(m[-1]["content"]))
    rejected = pairs["rejected"].map(lambda m: len(m[-1]["content"]))
    if not len(pairs):
        return {}
    return {"mean_chosen_chars": round(float(chosen.mean()), 1),
            "mean_rejected_chars": round(float(rejected.mean()), 1),
            "chosen_longer_fraction": round(float((chosen > rejected).mean()), 3)}


def examples(pairs: pd.DataFrame, k: int = 3):
    """The first pair of each of the first ``k`` prompts side by side, full text (``all_pairs`` gives a
    prompt several pairs: one each shows ``k`` prompts)."""
    first = pairs.drop_duplicates("prompt_id").head(k)
    table = pd.DataFrame({"prompt": first["prompt"],
                          "chosen": first["chosen"].map(lambda m: m[-1]["content"]),
                          "score_chosen": first["score_chosen"].round(3),
                          "rejected": first["rejected"].map(lambda m: m[-1]["content"]),
                          "score_rejected": first["score_rejected"].round(3)})
    return table.style.set_properties(**{"text-align": "left", "white-space": "pre-wrap"})
