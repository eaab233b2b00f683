"""Stage 01: prompts, the policy of an iteration, sampling N answers per prompt (vLLM or transformers)."""
