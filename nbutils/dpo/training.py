"""Stage 03: DPO with QLoRA (or every weight: ``finetuning: full``) through TRL's ``DPOTrainer`` (or,
for ``loss_type: simpo``, its ``CPOTrainer``: SimPO, no reference model; :mod:`nbutils.dpo.losses`).

The policy of iteration n is model n-1 loaded in 4-bit nf4 (bitsandbytes) with
LoRA adapters (peft); the reference is the same model with the adapters
disabled, so no second copy sits in memory (``reference_model: initial`` loads
the base model as a separate reference instead). On a GPU: bf16 compute, paged
AdamW; on CPU: float32 and plain AdamW; the code path is the same.
``load_in_4bit: auto`` trains LoRA on the unquantized model instead when the GPU
holds it with room to spare (the run plan's estimate + 10%), QLoRA otherwise.
``finetuning: full`` trains every weight of the unquantized model, with no
adapter: TRL loads model n-1 again as the reference, and the trained weights are
saved as the next policy directly.
``train_sampling_strategy: group_by_length`` batches pairs of similar length, so
a batch pads far less (TRL's collator pads to the batch's longest sequence;
TRL 1.16's ``padding_free`` is disabled for DPO); each pair's log-probs and loss
are the same, only which pairs share a batch changes.
Checkpoints are kept in ``dpo_checkpoints/``; a killed run resumes from the
last one, unless the params or the pairs changed (``nbutils.dpo.checkpoints``).
The same functions run in the notebook's process and in each process of
``accelerate launch`` (``nbutils.dpo.worker``).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from nbutils.compat import length_grouping, peft_resume, trl_cpo
from nbutils.dpo import losses
from nbutils.dpo.checkpoints import checkpoint_complete, drop_checkpoints, fingerprint, resume_point  # noqa: F401
# (checkpoint_complete and drop_checkpoints: the names tests/test_dpo.py and tests/test_hub.py import from here)

LENGTH_COLUMN = "length"  # transformers' default length_column_name


def full(p: dict) -> bool:
    """``finetuning: full``: every weight trains, no adapter."""
    return p.get("finetuning", "lora") == "full"


def device_map(p: dict, settings: dict):
    """Where ``from_pretrained`` puts the weights: this process's GPU (one process, or ``ddp``: each
    process its own, ``LOCAL_RANK``); None on the CPU and with ``zero3``/``fsdp2``, which place
    (shard) the weights themselves."""
    if not settings["gpu"] or p.get("distributed", "none") in ("zero3", "fsdp2"):
        return None
    return {"": int(os.environ.get("LOCAL_RANK", 0))}


def load_tokenizer(path: str):
    """The policy's tokenizer, with a pad token (its eos when it has none)."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str, p: dict, settings: dict, adapters: bool = True):
    """(model, tokenizer): ``path`` in 4-bit nf4 (or full precision: ``settings["load_in_4bit"]``,
    resolved by :func:`nbutils.dpo.hardware.device_settings`) ready for LoRA training (or, with
    ``finetuning: full``, for training every weight)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": settings["torch_dtype"], "device_map": device_map(p, settings)}
    if settings["load_in_4bit"]:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=settings["torch_dtype"],
            bnb_4bit_use_double_quant=True, bnb_4bit_quant_storage=settings["torch_dtype"])
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if settings["load_in_4bit"] and adapters:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=p["gradient_checkpointing"])
    return model, load_tokenizer(path)


def reference_model(stage, settings: dict):
    """None (the policy with adapters disabled: model n-1; with ``finetuning: full`` TRL loads model
    n-1 again; ``loss_type: simpo``: no reference at all), or the initial model for
    ``reference_model: initial`` after iteration 1."""
    if losses.is_simpo(stage.params) or stage["reference_model"] == "previous" or stage["iteration"] == 1:
        return None
    from nbutils.generate.policies import base_model_path
    return load_policy(base_model_path(stage["base_model"]), stage.params, settings, adapters=False)[0].eval()


def lora_config(p: dict):
    from peft import LoraConfig
    return LoraConfig(r=p["lora_r"], lora_alpha=p["lora_alpha"], lora_dropout=p["lora_dropout"],
                      target_modules=p["lora_target_modules"], bias="none", task_type="CAUSAL_LM")


def dpo_config(p: dict, settings: dict, output_dir: Path, **overrides):
    """TRL's config: ``DPOConfig``, or ``CPOConfig`` for ``loss_type: simpo``, with the loss's fields
    (:func:`nbutils.dpo.losses.config_fields`). ``remove_unused_columns`` is off so the ``length``
    column reaches the length-grouped sampler (the trainer drops columns before it builds the sampler);
    TRL's collators read only their own keys (DPO's ``prompt_ids``, ``chosen_ids``, ``rejected_ids``;
    CPO's pass the rest through as lists, which its loss ignores), so the other columns go no further. Under
    DDP no search for unused parameters (transformers turns it on for a peft model; every trained
    weight gets a gradient, and torch warns at each step that the search found none).
    ``overrides``: other ``DPOConfig`` fields (the worker's ``disable_tqdm``)."""
    fields = dict(
        output_dir=str(output_dir), beta=p["beta"], **losses.config_fields(p),
        learning_rate=p["learning_rate"], num_train_epochs=p["num_train_epochs"], max_steps=p["max_steps"],
        per_device_train_batch_size=p["per_device_train_batch_size"],
        per_device_eval_batch_size=p["per_device_train_batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"], max_length=p["max_length"],
        warmup_steps=p["warmup_ratio"], lr_scheduler_type=p["lr_scheduler_type"], optim=settings["optim"],
        gradient_checkpointing=p["gradient_checkpointing"], bf16=settings["dtype"] == "bfloat16",
        fp16=settings["dtype"] == "float16", use_cpu=not settings["gpu"], seed=p["seed"],
        logging_steps=1, save_strategy="steps", save_steps=p["save_steps"], save_total_limit=2,
        eval_strategy="no", report_to=[], disable_tqdm=False, train_sampling_strategy=p["train_sampling_strategy"],
        length_column_name=LENGTH_COLUMN, remove_unused_columns=False, use_liger_kernel=settings["use_liger_kernel"])
    if p.get("distributed", "none") == "ddp":
        fields["ddp_find_unused_parameters"] = False
    return losses.config_class(p)(**{**fields, **overrides})


def make_trainer(stage, model, tokenizer, train, evaluation, settings: dict, output_dir: Path, ref_model=None,
                 args=None):
    """TRL's ``DPOTrainer`` (``CPOTrainer`` for ``loss_type: simpo``, which takes no ``ref_model``)
    with LoRA adapters (none with ``finetuning: full``), the length-grouped sampler that resumes
    exactly, and QLoRA's adapter dtype kept across a resume. ``args``: a :func:`dpo_config` made
    before the model loaded (ZeRO-3 loads it sharded only while one lives)."""
    reference = {} if losses.is_simpo(stage.params) else {"ref_model": ref_model}
    with warnings.catch_warnings():
        # TRL 1.16 deprecates use_liger_kernel for Hub kernels loaded by model name (model_init_kwargs): not
        # for a model passed in, as here; nothing a user can act on
        warnings.filterwarnings("ignore", message=r"`use_liger_kernel=True` is deprecated", category=FutureWarning)
        trainer = losses.trainer_class(stage.params)(
            model=model, args=args or dpo_config(stage.params, settings, output_dir), train_dataset=train,
            eval_dataset=evaluation, processing_class=tokenizer,
            peft_config=None if full(stage.params) else lora_config(stage.params), **reference)
    if trainer.args.train_sampling_strategy == "group_by_length":
        trainer.train_dataset = with_lengths(trainer.train_dataset, stage["max_length"])
        trainer.eval_dataset = with_lengths(trainer.eval_dataset, stage["max_length"])  # grouped alike
        length_grouping.seed_length_grouping(trainer)  # exact resume past the first epoch
    if not full(stage.params):
        trainer.add_callback(peft_resume.adapter_dtype_keeper(trainer.model))  # exact resume of QLoRA
    return trainer


def with_lengths(dataset, max_length: int):
    """TRL's tokenized pairs (DPO's or CPO's: ``nbutils.compat.trl_cpo``) with a ``length`` column for
    the length-grouped sampler: prompt plus the longer answer in tokens (chat template included),
    capped at ``max_length`` where TRL truncates: the length a batch holding the pair is padded to."""
    if dataset is None:
        return None
    if LENGTH_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(LENGTH_COLUMN)
    columns = trl_cpo.sequence_columns(dataset.column_names)
    return dataset.map(lambda *ids: {LENGTH_COLUMN: trl_cpo.sequence_lengths(columns, *ids, max_length=max_length)},
                       batched=True, input_columns=list(columns), desc="Measuring pair lengths")


def padding_stats(trainer) -> dict:
    """Real and padded tokens of one pass over the trainer's train batches (chosen and rejected
    sequences; the sampler's order for this epoch)."""
    real = padded = 0
    for batch in trainer.get_train_dataloader():
        tokens = trl_cpo.batch_tokens(batch)
        real, padded = real + tokens[0], padded + tokens[1]
    return {"real_tokens": real, "padding_tokens": padded}


def train(trainer, stage, output_dir: Path, out_dir: Path) -> dict:
    """Train (resuming from the last checkpoint), evaluate, save the adapter (``finetuning: full``:
    the whole model) to ``out_dir``; returns stats. In every process when training is distributed."""
    nf4_layers = linear_4bit_layers(trainer.model)
    resolved = {"load_in_4bit": nf4_layers > 0, "use_liger_kernel": trainer.args.use_liger_kernel}
    resume = resume_point(trainer.accelerator, output_dir, fingerprint(stage, trainer.train_dataset, resolved))
    if resume and trainer.accelerator.is_main_process:
        print(f"resuming from {resume}")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    stats = {"resumed_from_checkpoint": Path(resume).name if resume else None,
             "train_seconds": round(time.perf_counter() - t0, 2), "global_steps": result.global_step,
             "train_loss": whole_run_loss(trainer.state.log_history, result.training_loss),
             "linear_4bit_layers": nf4_layers, "trainer": type(trainer).__name__,
             "loss": losses.describe(stage.params), "reference": losses.reference(stage.params)}
    if trainer.eval_dataset is not None:
        stats.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    save(trainer, out_dir, sharded=stage.params.get("distributed", "none") in ("zero3", "fsdp2"))
    return stats


def save(trainer, out_dir: Path, sharded: bool) -> None:
    """The adapter (or, with ``finetuning: full``, the whole model: the next policy) and the tokenizer
    with its chat template, in HF format, atomically, written by the first process. ``sharded``
    (ZeRO-3, FSDP2): the trainer gathers the weights from every process first, so all must call."""
    from nbutils.store.files import atomic_path
    main = trainer.accelerator.is_main_process
    if sharded and not main:
        trainer.save_model(str(out_dir))  # gathers the weights; only the first process writes
    elif main:
        with atomic_path(out_dir) as tmp:
            if sharded:
                trainer.save_model(str(tmp))
                (tmp / "training_args.bin").unlink(missing_ok=True)
            else:
                trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp)
                trainer.processing_class.save_pretrained(tmp)
    trainer.accelerator.wait_for_everyone()


def linear_4bit_layers(model) -> int:
    """bitsandbytes' 4-bit linear layers in ``model`` (what ``load_in_4bit`` made; peft's LoRA
    wrappers of them are not counted)."""
    import bitsandbytes as bnb
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def whole_run_loss(log_history: list[dict], fallback: float) -> float:
    """The mean loss of every optimizer step of the run, resumed ones included (the trainer's own
    ``training_loss`` averages only the steps since the last resume); logged every step."""
    losses = {r["step"]: r["loss"] for r in log_history if "loss" in r}
    return sum(losses.values()) / len(losses) if losses else fallback


def step_log(trainer) -> list[dict]:
    """Per-step training metrics: loss, rewards, margins, accuracies, learning rate."""
    keys = ["step", "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "learning_rate", "grad_norm"]
    return [{k: r[k] for k in keys if k in r} for r in trainer.state.log_history if "loss" in r]
