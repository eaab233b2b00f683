"""Library shims, one per library, each tested: llm-blender under transformers 5, alpaca_eval offline,
peft's resume of TRL's bf16 QLoRA adapters, TRL's experimental CPOTrainer (SimPO) beside its DPOTrainer."""
