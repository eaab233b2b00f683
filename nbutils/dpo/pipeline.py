"""Stage 03's steps as its notebook calls them, each the same call whether training runs in the
notebook's process (``distributed: none``) or in ``accelerate launch``'s processes
(:mod:`nbutils.dpo.launch`, :mod:`nbutils.dpo.worker`, which calls :func:`fit` too): load the
models, train, then make the next policy (merge the adapter, or with ``finetuning: full`` check the
weights the trainer saved). The next policy is always made once, in the notebook's process.
"""
from __future__ import annotations

import shutil

from nbutils.dpo import data, launch, launch_command, losses, merge, training


def distributed(stage) -> bool:
    return stage["distributed"] != "none"


def load_models(stage, policy_path: str, settings: dict):
    """(model, tokenizer, reference): the policy to train (``training.load_policy``) and the
    reference (None: the policy with its adapters off; ``loss_type: simpo``: none at all, said here).
    Distributed: (None, tokenizer, None): each training process loads its own models (what this
    machine cannot launch is refused first)."""
    print(f"loss: {losses.describe(stage.params)}; reference: {losses.reference(stage.params)}")
    if distributed(stage):
        launch_command.preflight(stage["distributed"], stage["devices"], settings["gpu"])
        return None, training.load_tokenizer(policy_path), None
    model, tokenizer = training.load_policy(policy_path, stage.params, settings)
    return model, tokenizer, training.reference_model(stage, settings)


def train(stage, settings: dict, policy_path: str, model, tokenizer, ref_model, train_pairs, eval_pairs) -> dict:
    """Train in this process (:func:`fit`), or across processes (``distributed``: the workers load
    the models and pairs themselves; ``model`` and ``ref_model`` are None). Returns ``train_stats``,
    ``steps`` (the per-step log), ``memory`` and, with ``finetuning: full``, ``trained_logprobs``
    and the ``check_prompts`` they were measured on."""
    if not distributed(stage):
        return fit(stage, model, tokenizer, ref_model, train_pairs, eval_pairs, settings)
    return launch.train(stage, settings, policy_path)


def fit(stage, model, tokenizer, ref_model, train_pairs, eval_pairs, settings: dict, args=None,
        callbacks=()) -> dict:
    """The trainer (``training.make_trainer``, with ``callbacks``), training with resume and the
    saved adapter (or whole model), the step log; with ``finetuning: full`` the trained model's
    next-token log-probs on the first pairs' prompts, which the saved policy must give back; and the
    ``trainer`` itself (notebook 03 checks its loss by hand; the notebook drops it before merging). In
    every process of a distributed run (ZeRO-3 and FSDP2 gather the weights in each forward)."""
    from nbutils.exec import memory
    run, n = stage.run, stage["iteration"]
    full = training.full(stage.params)
    trainer = training.make_trainer(stage, model, tokenizer, train_pairs, eval_pairs, settings, run.checkpoints(n),
                                    ref_model, args)
    for callback in callbacks:
        trainer.add_callback(callback)
    stats = training.train(trainer, stage, run.checkpoints(n), run.policy(n) if full else run.adapter(n))
    main = trainer.accelerator.is_main_process
    result = {"train_stats": stats, "steps": training.step_log(trainer), "trainer": trainer,
              "memory": memory.report("after training") if main else {}}
    if full:
        if main:
            shutil.rmtree(run.adapter(n), ignore_errors=True)  # an earlier LoRA run's: not this policy's
        prompts = data.check_prompts(train_pairs)
        result |= {"check_prompts": prompts,
                   "trained_logprobs": merge.next_token_logprobs(trainer.model.eval(), tokenizer, prompts)}
    return result


def next_policy(stage, settings: dict, policy_path: str, trained: dict, check_prompts: list[str]) -> dict:
    """LoRA: the adapter merged into model n-1 (``policy_path``) in full precision and saved as the
    next policy, checked on ``check_prompts``. ``finetuning: full``: the trainer saved it; it must
    load and give the trained model's log-probs (``trained``: what :func:`train` returned)."""
    n, dtype = stage["iteration"], settings["torch_dtype"]
    if training.full(stage.params):
        return merge.check_saved(stage.run.policy(n), trained["trained_logprobs"], dtype, trained["check_prompts"],
                                 stage.device)
    return merge.merge_adapter(policy_path, stage.run.adapter(n), stage.run.policy(n), dtype, check_prompts,
                               stage.device)
