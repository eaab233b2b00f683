"""Sample N responses per prompt with vLLM or transformers ``generate``.

Both backends take the same chat-templated token ids and return the same
:class:`Sample` fields, so stage 01's output schema does not depend on the
backend. Seeds (``sampling_seeds``): ``shard`` (default) seeds each shard once, derived
from seed, iteration and the shard's index: vLLM's engine is reseeded and its prefix cache
emptied before the shard, transformers seeds torch; the requests carry no seed, so vLLM's
sampler stays on its fast path (on a GPU a seeded request makes it draw row by row, every
step). ``request`` (vLLM only) seeds every prompt (its n samples use seed+i): the same
prompt draws the same answers whatever the sharding, at that cost. Either way a resumed run
redoes unfinished shards from their seeds, so it draws what an uninterrupted one would have.
"""
from __future__ import annotations

import gc
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nbutils.store.ids import derive_seed


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (ended with EOS) or "length" (hit max_new_tokens)


SEED_MODES = ("shard", "request")


def sampling_seeds(mode: str, backend: str, seed: int, iteration: int, prompt_ids: list[str],
                   shard: int) -> list[int]:
    """The seed of each prompt of a shard: ``request`` with vLLM, one per prompt; else the shard's
    one seed for all (transformers' batches share one stream, so it is always per shard)."""
    if mode == "request" and backend == "vllm":
        return [derive_seed(seed, iteration, pid) for pid in prompt_ids]
    return [derive_seed(seed, iteration, "shard", shard)] * len(prompt_ids)


class Reseed:
    """vLLM worker extension (``worker_extension_cls``): ``collective_rpc("reseed", (seed,))``
    reseeds every worker's torch, numpy and random generators, which unseeded requests draw from."""

    def reseed(self, seed: int) -> None:
        from vllm.utils.torch_utils import set_random_seed
        set_random_seed(seed, self.parallel_config.data_parallel_index)


def pick_backend(name: str) -> str:
    if name != "auto":
        return name
    return "vllm" if importlib.util.find_spec("vllm") else "hf"


def _decode(tokenizer, ids: list[int], eos_id: int, stopped: bool) -> Sample:
    ids = list(ids)
    while ids and ids[-1] in (eos_id, tokenizer.pad_token_id):
        ids.pop()
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return Sample(text, len(ids), "stop" if stopped else "length")


def weights_format(model: str) -> str:
    """vLLM's ``load_format`` for a model folder: ``safetensors`` (the HF shards its index names)
    when there are any, since "auto" loads Mistral's ``consolidated.safetensors`` when it is there."""
    shards = [f for f in Path(model).glob("*.safetensors") if not f.name.startswith("consolidated")]
    return "safetensors" if shards else "auto"


class VLLMBackend:
    """One ``vllm.LLM`` for the whole stage."""
    name = "vllm"

    def __init__(self, model: str, p: dict):
        from nbutils.exec.devices import resolve_device
        if resolve_device(p.get("device", "auto")) == "cpu":  # in-process engine on CPU: faster start, works in scripts
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        # HF config, tokenizer and weights, always: with "auto", vLLM switches a folder that holds
        # Mistral's consolidated*.safetensors + params.json to Mistral's own formats and tokenizer.
        self.llm = LLM(model=model, dtype=p["dtype"], seed=p["seed"],
                       gpu_memory_utilization=p["gpu_memory_utilization"],
                       max_model_len=p["max_model_len"], tokenizer_mode="hf", config_format="hf",
                       tensor_parallel_size=p.get("tensor_parallel_size", 1),
                       enforce_eager=p.get("enforce_eager", False),
                       load_format=weights_format(model),
                       worker_extension_cls=f"{Reseed.__module__}.{Reseed.__qualname__}")
        self.tokenizer = self.llm.get_tokenizer()
        self.p = p

    def generate(self, prompt_ids: list[list[int]], seeds: list[int], per_request: bool = False,
                 ignore_eos: bool = False) -> list[list[Sample]]:
        """``per_request``: each request carries its seed; else the engine is reseeded with the
        first and starts from an empty prefix cache (so its batches, hence its draws, are those of
        an uninterrupted run). ``ignore_eos``: every answer runs to max_new_tokens (benchmarks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        p, eos = self.p, self.tokenizer.eos_token_id
        if not per_request:
            self.llm.reset_prefix_cache()
            self.llm.collective_rpc("reseed", args=(seeds[0],))
        params = [SamplingParams(n=p["num_samples"], temperature=p["temperature"], top_p=p["top_p"],
                                 max_tokens=p["max_new_tokens"], seed=s if per_request else None,
                                 ignore_eos=ignore_eos)
                  for s in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids],
                                 params, use_tqdm=False)
        return [[_decode(self.tokenizer, c.token_ids, eos, c.finish_reason == "stop")
                 for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]


class HFBackend:
    """transformers ``generate``, batched over prompts, ``num_return_sequences`` each."""
    name = "hf"

    def __init__(self, model: str, p: dict):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from nbutils.exec.devices import resolve_device
        self.device = resolve_device(p.get("device", "auto"))
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model, dtype=p["dtype"]).to(self.device).eval()
        self.p = p

    def generate(self, prompt_ids: list[list[int]], seeds: list[int], per_request: bool = False) -> list[list[Sample]]:
        import torch

        p, tok, out = self.p, self.tokenizer, []
        torch.manual_seed(seeds[0])
        for start in range(0, len(prompt_ids), p["hf_batch_size"]):
            batch = tok.pad({"input_ids": prompt_ids[start: start + p["hf_batch_size"]]},
                            return_tensors="pt").to(self.device)
            with torch.inference_mode():
                gen = self.model.generate(
                    **batch, do_sample=p["temperature"] > 0, temperature=p["temperature"] or None,
                    top_p=p["top_p"], max_new_tokens=p["max_new_tokens"],
                    num_return_sequences=p["num_samples"], pad_token_id=tok.pad_token_id)
            new = gen[:, batch["input_ids"].shape[1]:].tolist()
            for i in range(0, len(new), p["num_samples"]):
                out.append([_decode(tok, ids, tok.eos_token_id, tok.eos_token_id in ids)
                            for ids in new[i: i + p["num_samples"]]])
        return out


_LOADED: dict = {}  # one engine at a time, kept for reruns of a notebook cell
ENGINE_KEYS = ("dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager")


def load_backend(model: str, p: dict):
    """The generation backend ``p['backend']`` names (``auto``: vLLM if installed).
    Rerunning with the same model and engine settings reuses the loaded engine;
    anything else frees it first (vLLM holds its memory share while it lives)."""
    name = pick_backend(p["backend"])
    if name == "vllm" and not importlib.util.find_spec("vllm"):
        raise ImportError("backend 'vllm' asked for, but vllm is not installed (make install)")
    key = (name, model, *(p.get(k) for k in ENGINE_KEYS), p.get("tensor_parallel_size", 1))
    if key not in _LOADED:
        _LOADED.clear()
        gc.collect()
        _LOADED[key] = (VLLMBackend if name == "vllm" else HFBackend)(model, p)
    backend = _LOADED[key]
    backend.p = p  # sampling settings may change between calls
    return backend


def timed_generate(backend, prompt_ids, seeds, per_request: bool) -> tuple[list[list[Sample]], float]:
    t0 = time.perf_counter()
    samples = backend.generate(prompt_ids, seeds, per_request)
    return samples, time.perf_counter() - t0
