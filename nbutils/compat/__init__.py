"""Library shims, one per library, each tested: llm-blender under transformers 5, alpaca_eval offline."""
