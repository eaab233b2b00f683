"""One process of stage 03's training across processes: ``python -m nbutils.dpo.worker spec.json``,
started by ``accelerate launch`` (:mod:`nbutils.dpo.launch`) once per GPU (on the CPU: per process).

It runs the notebook's own functions: ``hardware.device_settings`` (with the values ``auto`` took in
the notebook), ``training.load_policy`` (on this process's GPU; with ZeRO-3 or FSDP2 placed by them),
``data.load_pairs`` and ``pipeline.fit`` (the trainer, resume from the last checkpoint, the saved
adapter or model). The first process writes the steps it reached (``progress.json``), then
``result.json`` (train stats, data stats, step log, settings) and, with ``finetuning: full``,
``trained_logprobs.pt``, which the notebook reads back. It dies with its launcher.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nbutils.store.files import write_json
from nbutils.store.paths import ParamsView


@dataclass(frozen=True)
class StageParams(ParamsView):
    """Stage 03's resolved params as the training functions read them (``stage[key]``,
    ``stage.params``, ``stage.run``): the worker's stand-in for the notebook's Stage."""
    params: dict


def progress_writer(path: Path):
    """A callback by which the first process writes ``{"step", "max_steps"}`` to ``path`` as it trains
    (the notebook's progress bar)."""
    from transformers import TrainerCallback

    class WriteProgress(TrainerCallback):
        def write(self, state):
            if state.is_world_process_zero:
                write_json({"step": state.global_step, "max_steps": state.max_steps}, path)

        def on_train_begin(self, args, state, control, **kwargs):
            self.write(state)

        def on_step_end(self, args, state, control, **kwargs):
            self.write(state)

    return WriteProgress()


def main(spec_path: str) -> None:
    from nbutils.logs import quiet
    from nbutils.exec.processes import die_with_parent
    die_with_parent(os.getppid())  # the launcher: torchrun starts each worker in a session of its own
    quiet()
    from accelerate import PartialState

    from nbutils.dpo import data, hardware, pipeline, training
    spec = json.loads(Path(spec_path).read_text())
    stage, work, n = StageParams(spec["params"]), Path(spec["folder"]), spec["params"]["iteration"]
    settings = hardware.device_settings({**stage.params, **spec["resolved"]}, say=False)
    # the trainer's config before the model: ZeRO-3 loads the weights already sharded while one lives
    args = training.dpo_config(stage.params, settings, stage.run.checkpoints(n), disable_tqdm=True)
    model, tokenizer = training.load_policy(spec["policy_path"], stage.params, settings)
    ref_model = training.reference_model(stage, settings)
    pair_dirs = stage.run.training_pairs(n, stage["train_on"])  # train_on: all_iterations reads 1..n
    train_pairs, eval_pairs, data_stats = data.load_pairs(pair_dirs, tokenizer, stage["max_length"])
    result = pipeline.fit(stage, model, tokenizer, ref_model, train_pairs, eval_pairs, settings, args,
                          [progress_writer(work / "progress.json")])
    result.pop("trainer")  # stays in this process
    if PartialState().is_main_process:
        logprobs = result.pop("trained_logprobs", None)
        if logprobs is not None:
            import torch
            torch.save(logprobs, work / "trained_logprobs.pt")
        write_json({**result, "data_stats": data_stats, "processes": PartialState().num_processes,
                    "settings": {k: v for k, v in settings.items() if k != "torch_dtype"}}, work / "result.json")
    PartialState().wait_for_everyone()
    PartialState().destroy_process_group()  # before exit, or torch warns that it was left


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m nbutils.dpo.worker <spec.json> (nbutils.dpo.launch writes it)")
    main(sys.argv[1])
