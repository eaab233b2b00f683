"""Range and path rules for params: each returns None if fine, else what is wrong."""
from __future__ import annotations

import re

from nbutils.dpo import losses
from nbutils.store.files import repo_path
from nbutils.sources.kinds import (HUB_ID, LOCAL_SUFFIXES, PACKAGED_MODELS, SELF, TINY_MODELS, TINY_RANKERS,
                                   is_function_spec, kind, looks_local)


def at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}"


def fraction(v):
    return None if 0 < v <= 1 else "must be in (0, 1]"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def name(v):
    return None if re.fullmatch(r"[A-Za-z0-9][\w.-]*", v) else "must be a plain name (letters, digits, . _ -)"


def name_or_empty(v):
    return None if v == "" else name(v)


def dataset_source(v):
    """A local JSONL/JSON/parquet file that exists, or a hub dataset id."""
    if looks_local(v):
        if not repo_path(v).is_file():
            return f"no such file {repo_path(v)}"
        if not v.endswith(LOCAL_SUFFIXES):
            return f"a local prompt file must end in {', '.join(LOCAL_SUFFIXES)}"
        return None
    return None if HUB_ID.match(v) else "neither an existing file nor a hub id like org/name"


def function_problem(spec: str):
    """``module:function``: the module imports and has the function (checked before any stage runs)."""
    import importlib
    module, _, name = spec.partition(":")
    try:
        found = importlib.import_module(module)
    except ImportError as e:
        return f"cannot import module {module!r} ({e}); module:function names an importable module"
    return None if callable(getattr(found, name, None)) else f"module {module!r} has no function {name!r}"


def model_dir_source(what: str, builtins: tuple, functions: bool = False):
    """A rule: a built-in tiny name, a local directory with config.json, a hub id
    (or, with ``functions``, ``module:function``)."""
    def rule(v):
        if functions and is_function_spec(v):
            return function_problem(v)
        if v in PACKAGED_MODELS:
            from nbutils.packaged.smollm2 import PackagedModelError, gguf_file
            try:
                gguf_file()
            except PackagedModelError as e:
                return str(e)
        if v in builtins:
            return None
        if looks_local(v):
            path = repo_path(v)
            return None if (path / "config.json").exists() else f"no {what} (config.json) in {path}"
        extra = ", module:function" if functions else ""
        return None if HUB_ID.match(v) else (
            f"neither {', '.join(builtins)}{extra}, a {what} directory, nor a hub id like org/name")
    rule.__doc__ = f"A built-in {what} ({', '.join(builtins)}), a local {what} directory, or a hub id."
    return rule


model_source = model_dir_source("model", TINY_MODELS + PACKAGED_MODELS)
ranker_source = model_dir_source("ranker", TINY_RANKERS + (SELF,), functions=True)


def pair_selection(v):
    from nbutils.rerank.pairs import SELECTIONS
    return one_of(*SELECTIONS)(v)


def hub_repo_or_empty(v):
    return None if v == "" or HUB_ID.match(v) else "must be empty (no upload) or a hub repo id like org/name"


def positive(v):
    return None if v > 0 else "must be > 0"


def in_unit_interval(v):
    return None if 0 <= v < 1 else "must be in [0, 1)"


def steps_or_unlimited(v):
    return None if v == -1 or v >= 1 else "must be -1 (no cap) or at least 1"


def non_empty(v):
    return None if v else "must name at least one module"


def true_false_or_auto(v):
    return None if isinstance(v, bool) or v == "auto" else "must be true, false or auto"


SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def optimizer(v):
    if v == "auto":
        return None
    from transformers.training_args import OptimizerNames
    names = [o.value for o in OptimizerNames]
    return None if v in names else "must be auto or a transformers optimizer, e.g. adamw_torch, paged_adamw_32bit"


def judge_source(v):
    return None if v == "" else ranker_source(v)


def reference_source(v):
    if v in ("auto", "base"):
        return None
    return None if repo_path(v).is_file() else f"must be auto, base, or an existing model_outputs.json (no {repo_path(v)})"


def leaderboard_models(v):
    from nbutils.compat.alpaca_eval import LEADERBOARD, leaderboard
    unknown = [m for m in v if m not in leaderboard().index]
    return f"{unknown} not on the AlpacaEval 2.0 leaderboard alpaca_eval ships ({LEADERBOARD})" if unknown else None


def leaderboard_model_or_empty(v):
    return None if v == "" else leaderboard_models([v])


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
    "sampling_seeds": one_of("shard", "request"),
    "dtype": one_of("auto", "float32", "bfloat16", "float16"),
    "device": one_of("auto", "cuda", "cpu"),
    "gpu_memory_utilization": fraction,
    "hf_batch_size": at_least(1),
    "shard_size": at_least(1),
    "devices": at_least(1),
    "tensor_parallel_size": at_least(1),
    "num_nodes": at_least(1),
    "distributed": one_of("none", "ddp", "zero3", "fsdp2"),
    "finetuning": one_of("lora", "full"),
    "ranker": ranker_source,
    "ranker_batch_size": at_least(1),
    "pair_selection": pair_selection,
    "length_penalty": at_least(0.0),
    "near_best": at_least(0.0),
    "max_pairs_per_prompt": at_least(1),
    "test_fraction": in_unit_interval,
    "push_to_hub": hub_repo_or_empty,
    "beta": positive,
    "learning_rate": positive,
    "num_train_epochs": positive,
    "max_steps": steps_or_unlimited,
    "per_device_train_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "max_length": at_least(16),
    "warmup_ratio": in_unit_interval,
    "lr_scheduler_type": one_of(*SCHEDULERS),
    "optim": optimizer,
    "loss_type": losses.loss_type_problem,  # the loss keys' rules: nbutils.dpo.losses
    "loss_weights": losses.loss_weights_problem,
    "ld_alpha": losses.ld_alpha_problem,
    "simpo_gamma": losses.simpo_gamma_problem,
    "load_in_4bit": true_false_or_auto,
    "train_sampling_strategy": one_of("random", "group_by_length"),
    "use_liger_kernel": true_false_or_auto,
    "lora_r": at_least(1),
    "lora_alpha": at_least(1),
    "lora_dropout": in_unit_interval,
    "lora_target_modules": non_empty,
    "reference_model": one_of("previous", "initial"),
    "train_on": one_of("this_iteration", "all_iterations"),
    "save_steps": at_least(1),
    "eval_dataset": dataset_source,
    "eval_instructions": at_least(0),
    "eval_temperature": at_least(0.0),
    "eval_top_p": fraction,
    "eval_max_new_tokens": at_least(1),
    "judge": judge_source,
    "reference_outputs": reference_source,
    "best_of_n": at_least(1),
    "best_of_temperature": at_least(0.0),
    "compare_run": name_or_empty,
    "anchor_models": leaderboard_models,
    "published_base": leaderboard_model_or_empty,
    "calibration_models": leaderboard_models,
    "calibration_bootstrap": at_least(1),
}


def check_relations(v: dict) -> list[str]:
    """Rules between keys."""
    problems = []
    if {"iteration", "num_iterations"} <= v.keys() and v["iteration"] > v["num_iterations"]:
        problems.append(f"iteration: {v['iteration']} is past num_iterations ({v['num_iterations']})")
    for key in ("max_new_tokens", "eval_max_new_tokens"):
        if {key, "max_model_len"} <= v.keys() and v[key] >= v["max_model_len"]:
            problems.append(f"{key}: must be below max_model_len (the prompt needs room)")
    if v.get("compare_run") and v["compare_run"] == v.get("run_name"):
        problems.append(f"compare_run: {v['compare_run']!r} is this run; name another run, or leave it empty")
    problems += selection_relations(v)
    return problems + losses.problems(v) + world_relations(v) + parallel_relations(v)


def world_relations(v: dict) -> list[str]:
    """A tiny model (built here, for the CPU) with the real world's prompts or judge: two presets'
    keys mixed, as ``papermill -f <preset>`` does with a file that is not a complete recipe (it
    merges over the notebook's tiny defaults and leaves the keys the file lacks tiny)."""
    if kind(v.get("base_model", "")) != "tiny":
        return []
    real = [k for k in ("prompts_dataset", "ranker") if v.get(k) and kind(v[k]) == "hub"]
    if not real:
        return []
    return [f"base_model: {v['base_model']!r} (a tiny model) with " + ", ".join(f"{k}: {v[k]!r}" for k in real)
            + " (the hub): two worlds mixed. papermill -f merges a file over the notebook's tiny defaults, so a "
            "preset that is not complete leaves tiny values in place: give a complete recipe (recipes/<name>.yaml "
            "sets every key), or run it with python -m nbutils run -f, which merges over params/base.yaml"]


def selection_relations(v: dict) -> list[str]:
    """A selection's own param (``length_penalty``, ``near_best``, ``max_pairs_per_prompt``) set away from
    base.yaml's value with another ``pair_selection``: it would do nothing, so say so."""
    from nbutils.rerank.pairs import SELECTION_PARAMS
    problems = []
    for method, defaults in SELECTION_PARAMS.items():
        for key, default in defaults.items():
            if v.get(key, default) != default and v.get("pair_selection", method) != method:
                problems.append(f"{key}: {v[key]} acts only with pair_selection: {method} "
                                f"(it is {v['pair_selection']}); set both, or {key}: {default}")
    return problems


def parallel_relations(v: dict) -> list[str]:
    """Rules between the keys of more than one GPU (``nbutils.exec.placement``)."""
    problems, tp, devices = [], v.get("tensor_parallel_size", 1), v.get("devices", 1)
    if devices % tp:
        problems.append(f"tensor_parallel_size: {tp} does not divide devices ({devices}): each engine takes "
                        f"tensor_parallel_size GPUs; set devices to a multiple of it")
    sharded = v.get("distributed") in ("zero3", "fsdp2")
    if sharded and v.get("load_in_4bit") is True:
        problems.append(f"load_in_4bit: true with distributed: {v['distributed']} is refused: {v['distributed']} "
                        "shards every weight across the GPUs (which is what 4-bit does on one GPU), and "
                        "bitsandbytes' packed 4-bit weights need a storage dtype and loading path this workbook "
                        "does not test; set load_in_4bit: false (or auto), or distributed: ddp")
    if v.get("finetuning") == "full" and v.get("load_in_4bit") is True:
        problems.append("load_in_4bit: true with finetuning: full: 4-bit weights do not train; set load_in_4bit: "
                        "false (or auto), or finetuning: lora (QLoRA)")
    if v.get("num_nodes", 1) > 1 and v.get("distributed", "none") == "none":
        problems.append(f"num_nodes: {v['num_nodes']} needs distributed: ddp, zero3 or fsdp2 (one process "
                        "cannot span machines)")
    return problems
