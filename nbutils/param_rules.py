"""Range and path rules for params: each returns None if fine, else what is wrong."""
from __future__ import annotations

import re

from .files import repo_path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
TINY_MODELS = ("tiny-mistral",)


def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def fraction(v):
    return None if 0 < v <= 1 else "must be in (0, 1]"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def name(v):
    return None if re.fullmatch(r"[A-Za-z0-9][\w.-]*", v) else "must be a plain name (letters, digits, . _ -)"


def looks_local(v: str) -> bool:
    return v.startswith((".", "/", "~")) or v.endswith(LOCAL_SUFFIXES) or repo_path(v).exists()


def dataset_source(v):
    """A local JSONL/JSON/parquet file that exists, or a hub dataset id."""
    if looks_local(v):
        if not repo_path(v).is_file():
            return f"no such file {repo_path(v)}"
        if not v.endswith(LOCAL_SUFFIXES):
            return f"a local prompt file must end in {', '.join(LOCAL_SUFFIXES)}"
        return None
    return None if HUB_ID.match(v) else "neither an existing file nor a hub id like org/name"


def model_source(v):
    """A built-in tiny model name, a local model directory, or a hub model id."""
    if v in TINY_MODELS:
        return None
    if looks_local(v):
        path = repo_path(v)
        return None if (path / "config.json").exists() else f"no model (config.json) in {path}"
    return None if HUB_ID.match(v) else (
        f"neither {', '.join(TINY_MODELS)}, a model directory, nor a hub id like org/name")


def ranker_source(v):
    """tiny-pairrm, ``module:function``, a local ranker directory, or a hub id."""
    from .rankers import FUNCTION, TINY_RANKERS
    if v in TINY_RANKERS or (FUNCTION.match(v) and not looks_local(v)):
        return None
    if looks_local(v):
        path = repo_path(v)
        return None if (path / "config.json").exists() else f"no ranker (config.json) in {path}"
    return None if HUB_ID.match(v) else (
        f"neither {', '.join(TINY_RANKERS)}, module:function, a ranker directory, nor a hub id like org/name")


def pair_selection(v):
    from .pairs import SELECTIONS
    return one_of(*SELECTIONS)(v)


def hub_repo_or_empty(v):
    return None if v == "" or HUB_ID.match(v) else "must be empty (no upload) or a hub repo id like org/name"


RULES = {
    "run_name": name,
    "iteration": at_least(1),
    "num_iterations": at_least(1),
    "base_model": model_source,
    "prompts_dataset": dataset_source,
    "prompts_per_iteration": at_least(1),
    "num_samples": at_least(1),
    "temperature": at_least(0.0),
    "top_p": fraction,
    "max_new_tokens": at_least(1),
    "max_model_len": at_least(16),
    "backend": one_of("auto", "vllm", "hf"),
    "dtype": one_of("auto", "float32", "bfloat16", "float16"),
    "gpu_memory_utilization": fraction,
    "hf_batch_size": at_least(1),
    "shard_size": at_least(1),
    "ranker": ranker_source,
    "ranker_batch_size": at_least(1),
    "pair_selection": pair_selection,
    "test_fraction": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "push_to_hub": hub_repo_or_empty,
}


def check_relations(v: dict) -> list[str]:
    """Rules between keys."""
    problems = []
    if {"iteration", "num_iterations"} <= v.keys() and v["iteration"] > v["num_iterations"]:
        problems.append(f"iteration: {v['iteration']} is past num_iterations ({v['num_iterations']})")
    if {"max_new_tokens", "max_model_len"} <= v.keys() and v["max_new_tokens"] >= v["max_model_len"]:
        problems.append("max_new_tokens: must be below max_model_len (the prompt needs room)")
    return problems
