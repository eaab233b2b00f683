"""Stage 03: the pairs as TRL reads them, DPO with (Q)LoRA, the merge into the next policy."""
