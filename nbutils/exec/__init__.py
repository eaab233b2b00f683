"""Where and how work runs: cuda or cpu (devices), which GPUs or cores each worker takes and which
shards (placement), work in child processes, one or many (processes), memory reports (memory)."""
