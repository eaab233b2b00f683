"""Stage 04's outputs: every model of a run (and best-of-N from the final one) answers
the eval set, saved as alpaca_eval's ``model_outputs.json``; the reference outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.store.files import atomic_path
from nbutils.sources.hub import ALPACA_EVAL
from nbutils.generate.policies import base_model_path


def slug(name: str) -> str:
    return name.replace(" ", "_").replace("-", "_")


def eval_prompts(stage):
    """The eval instructions (``prompt`` or ``instruction`` column), bad rows named; the first
    ``eval_instructions`` of them when that is not 0."""
    from nbutils.generate.prompts import load_prompt_source
    prompts = load_prompt_source(stage["eval_dataset"], stage["eval_split"])
    return prompts.select(range(min(stage["eval_instructions"] or len(prompts), len(prompts))))


def models_of_run(stage) -> list[tuple[str, str]]:
    """(name, path): the base model, then each iteration's merged policy that exists, in order.
    Missing iterations are named, not an error: by hand, 04 evaluates what 01-03 have made."""
    wanted = range(1, stage["num_iterations"] + 1)
    have = [n for n in wanted if stage.run.has_policy(n)]
    missing = [n for n in wanted if n not in have]
    if missing:
        print(f"note: no model yet for iteration(s) {missing} (stage 03 saves it as {stage.run.policy(missing[0])}); "
              f"evaluating the base model{' and iteration(s) ' + str(have) if have else ''}")
    return [("base", base_model_path(stage["base_model"]))] + [(f"iteration {n}", str(stage.run.policy(n))) for n in have]


def sample(stage, prompts, model: str, out_dir: Path, n: int, temperature: float) -> list[list[str]]:
    """``n`` answers per eval prompt from ``model`` (stage 01's generation code, resumable,
    in a process of its own so the next model gets the memory back)."""
    return sample_many(stage, prompts, model, [(out_dir, n, temperature)])[0]


def sample_many(stage, prompts, model: str, specs: list[tuple[Path, int, float]]) -> list[list[list[str]]]:
    """:func:`sample` for each (out_dir, n, temperature) of ``specs``, from one engine start."""
    from nbutils.generate.sampling import generate_jobs
    jobs = [({**stage.params, "iteration": 0, "num_samples": n, "temperature": temperature,
              "top_p": stage["eval_top_p"], "max_new_tokens": stage["eval_max_new_tokens"], "base_model": model},
             out_dir / "generations.parquet") for out_dir, n, temperature in specs]
    desc = " + ".join(f"{out_dir.name}: {n} answer{'s' if n > 1 else ''} per instruction" for out_dir, n, _ in specs)
    results = generate_jobs(jobs, prompts, model, desc=desc)
    for df, _ in results:
        if len(df) != len(prompts):
            raise ValueError(f"{model}: {len(prompts) - len(df)} eval prompts were too long for max_model_len; "
                             f"raise max_model_len so every model answers the same instructions")
    return [[list(r) for r in df["all_generated_responses"]] for df, _ in results]


def write_model_outputs(path: Path, instructions: list[str], outputs: list[str], generator: str, dataset: str):
    """alpaca_eval's ``model_outputs.json``: instruction, output, generator, dataset."""
    rows = [{"instruction": i, "output": o, "generator": generator, "dataset": dataset}
            for i, o in zip(instructions, outputs)]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1))


def save_outputs(stage, out_dir: Path, name: str, instructions, outputs: list[str]) -> pd.DataFrame:
    """``out_dir/<slug>/model_outputs.json`` of model ``name``, as alpaca_eval reads it back."""
    from nbutils.compat.alpaca_eval import read_model_outputs
    target = out_dir / slug(name) / "model_outputs.json"
    write_model_outputs(target, instructions, outputs, name, stage["eval_dataset"])
    return read_model_outputs(target)


def lengths(outputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each model's answers: mean and median length in characters, and how many are empty."""
    return pd.DataFrame({name: {"mean_chars": round(float(df["output"].str.len().mean()), 1),
                                "median_chars": float(df["output"].str.len().median()),
                                "empty": int((df["output"].str.strip() == "").sum())}
                         for name, df in outputs.items()}).T.rename_axis("model")


def best_of_n(ranker, instructions: list[str], samples: list[list[str]], batch_size: int,
              desc: str | None = None, bucketing: bool = True) -> list[str]:
    """Each instruction's highest-scored sample (empty samples never win)."""
    best = []
    scored = ranker.score(instructions, [[s or " " for s in row] for row in samples], batch_size, desc=desc,
                          bucketing=bucketing)
    for row, scores in zip(samples, scored):
        scores = [s if text.strip() else -np.inf for s, text in zip(scores, row)]
        best.append(row[int(np.argmax(scores))])
    return best


def answer_all(stage, prompts, out_dir: Path) -> dict[str, pd.DataFrame]:
    """Each model's ``model_outputs.json`` (one answer per instruction at the eval settings). The
    final model's engine also draws its best-of-N samples (:func:`sample_best_of` then finds them)."""
    outputs, models = {}, models_of_run(stage)
    for i, (name, path) in enumerate(models):
        specs = [(out_dir / slug(name), 1, stage["eval_temperature"])]
        if i == len(models) - 1:
            specs.append(best_of_spec(stage, out_dir, name)[1:])
        texts = sample_many(stage, prompts, path, specs)[0]
        outputs[name] = save_outputs(stage, out_dir, name, prompts["prompt"], [t[0] for t in texts])
    return outputs


def best_of_spec(stage, out_dir: Path, last: str) -> tuple[str, Path, int, float]:
    """(name, out_dir, n, temperature) of the best-of-N samples of the final model, named ``last``."""
    name = f"{last} best-of-{stage['best_of_n']}"
    return name, out_dir / slug(name), stage["best_of_n"], stage["best_of_temperature"]


def sample_best_of(stage, prompts, out_dir: Path) -> tuple[str, list[list[str]]]:
    """(name, samples): the final model's ``best_of_n`` samples at ``best_of_temperature`` (drawn
    by :func:`answer_all` already, when it ran first: then no engine starts)."""
    last, final = models_of_run(stage)[-1]
    name, folder, n, temperature = best_of_spec(stage, out_dir, last)
    return name, sample(stage, prompts, final, folder, n, temperature)


def pick_best(stage, prompts, ranker, name: str, samples: list[list[str]], out_dir: Path) -> pd.DataFrame:
    """The ranker's best of each instruction's samples, saved as model ``name``'s outputs.
    Load the ranker after all sampling: on a GPU, a vLLM engine starts only when its
    memory share is free."""
    best = best_of_n(ranker, list(prompts["prompt"]), samples, stage["ranker_batch_size"], desc=f"{name}: ranking",
                     bucketing=stage["ranker_bucketing"])
    return save_outputs(stage, out_dir, name, prompts["prompt"], best)


def on_alpaca_eval(stage) -> bool:
    """The eval set is AlpacaEval's and the reference its GPT-4-turbo outputs: the leaderboard's
    LC GLM, its published outputs and its judgments apply."""
    return stage["eval_dataset"] == ALPACA_EVAL and stage["reference_outputs"] == "auto"


def reference_outputs(stage, outputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``auto``: AlpacaEval's GPT-4-turbo outputs on AlpacaEval, else the base model's;
    ``base``; or a ``model_outputs.json`` path. Cut to the eval set's first ``eval_instructions``."""
    choice = stage["reference_outputs"]
    if choice == "base" or (choice == "auto" and stage["eval_dataset"] != ALPACA_EVAL):
        return outputs["base"]
    if choice == "auto":
        from nbutils.sources.hub import alpaca_eval
        reference = alpaca_eval("reference")
    else:
        from nbutils.compat.alpaca_eval import read_model_outputs
        from nbutils.store.files import repo_path
        reference = read_model_outputs(repo_path(choice))
    return reference.head(stage["eval_instructions"] or len(reference)).reset_index(drop=True)
