"""The throughput figures the run planner uses, each with its source.

Public measurements where one exists, derived where none does (the source says which and how),
and the padding shares measured by ``benchmarks/`` on real answer lengths (AlpacaEval 2.0's
published outputs). Every figure is an order-of-magnitude estimate for a 7B model.
"""
from __future__ import annotations

from dataclasses import dataclass

LAMBDA = "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md"
TORCHTUNE = "https://github.com/pytorch/torchtune/blob/main/README.md"
# torchtune, Llama 3.1 8B on 1x RTX 4090, batch 2, packed to 2048 (no padding), torch.compile: tokens/s
SFT_4090 = {"qlora": 2413, "lora": 3083}
SERVING_4090 = 1190    # vLLM output tok/s on the RTX 4090 (below): the unit of the GPU ratios
DPO_COST = 2.7         # a pair vs SFT on one sequence: 2 sequences x (fwd+bwd 3 + reference fwd 1) / 3
# real / padded tokens when a batch of 4 pairs (8 sequences) is padded to its longest: prompt + answer
# lengths of AlpacaEval 2.0's published answers, capped at 1,024 (benchmarks/dpo_padding.py)
PAD_SHARE = {"random": 0.60, "group_by_length": 0.82}
PAIRRM_UTIL = 0.2      # assumed share of the dense fp16 tensor peak that PairRM reaches
PAIRRM_SOURCE, PAIRRM_CANDIDATE = 1224, 412  # PairRM's source / candidate max lengths (its config)
# tokens PairRM processes / tokens it reads (every comparison padded to its batch's longest): prompts in
# arrival order, or sorted by length into batches (ranker_bucketing); AlpacaEval's 805 instructions x 5 real
# answers, batches of 8 prompts (benchmarks/rerank.py counts them)
PAIRRM_PAD = {False: 1.61, True: 1.19}
# More than one GPU (assumed, no measurement found for this workload): the share of linear scaling that
# data-parallel DPO keeps per process (DDP: one all-reduce of the LoRA or full gradients per step; ZeRO-3 and
# FSDP2 also gather every layer's weights in the forward and backward), and the share a vLLM engine keeps per
# GPU when tensor parallel splits one model (NVLink all-reduces in every layer; a 7B model fits one GPU)
DP_EFFICIENCY = {"ddp": 0.9, "zero3": 0.8, "fsdp2": 0.8}
TP_EFFICIENCY = 0.75
# Full fine-tuning (finetuning: full): FLOPs per token, x params: the policy's forward and backward (6), the
# forward gradient checkpointing recomputes (2) and the reference's forward (2); at an assumed 40% of the
# dense bf16 peak (model FLOPs utilisation typical of ZeRO-3 training of a 7B model)
FULL_FLOPS, FULL_MFU = 10, 0.40


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float      # as nvidia-smi reports it
    gen_tok_s: float       # vLLM output tokens/s, 7B model, bf16, a saturated offline batch
    gen_source: str
    serving_tok_s: float   # vLLM serving tokens/s, same family of benchmark as SERVING_4090: the GPU ratio
    fp16_tflops: float     # dense fp16 tensor peak, fp32 accumulate (spec sheet)
    spec: str

    @property
    def ratio(self) -> float:
        return self.serving_tok_s / SERVING_4090

    def dpo_tok_s(self, lora: bool = False, sampling: str = "random") -> float:
        """DPO tokens/s (chosen + rejected sequences), 7B: QLoRA, or LoRA on the bf16 base."""
        return SFT_4090["lora" if lora else "qlora"] * self.ratio * 2 / DPO_COST * PAD_SHARE[sampling]

    def dpo_source(self, lora: bool = False, sampling: str = "random") -> str:
        kind = "LoRA (bf16 base)" if lora else "QLoRA"
        return (f"derived: torchtune {kind} SFT {SFT_4090['lora' if lora else 'qlora']} tok/s on RTX 4090 "
                f"(Llama 3.1 8B, packed; {TORCHTUNE})" + (f" x {self.name}/RTX 4090 {self.ratio:.2f}" if self.ratio != 1
                                                           else "")
                + f" x 2 sequences / DPO factor {DPO_COST} x {PAD_SHARE[sampling]:.0%} real tokens per padded batch"
                f" ({sampling}; benchmarks/dpo_padding.py on AlpacaEval answer lengths)")

    def full_dpo_tok_s(self, params: float) -> float:
        """Full fine-tuning DPO tokens/s on one GPU (chosen + rejected sequences), from FLOPs."""
        return self.fp16_tflops * 1e12 * FULL_MFU / (FULL_FLOPS * params)

    def full_dpo_source(self, params: float) -> str:
        return (f"derived: {self.fp16_tflops:g} TFLOPS dense bf16 ({self.spec}) x {FULL_MFU:.0%} utilisation (assumed) "
                f"/ ({FULL_FLOPS} x {params / 1e9:.2f}B FLOPs per token: policy forward, backward and recompute, "
                "reference forward)")

    def pairrm_cmp_s(self, tokens: float = 2048) -> float:
        """PairRM comparisons/s at ``tokens`` per comparison (435M parameters)."""
        return self.fp16_tflops * 1e12 * PAIRRM_UTIL / (2 * 0.435e9 * tokens)

    @property
    def pairrm_source(self) -> str:
        return (f"derived: {self.fp16_tflops:g} TFLOPS dense fp16 ({self.spec}) x {PAIRRM_UTIL:.0%} utilisation "
                "(assumed) / (2 x 435M params x tokens per comparison)")


# Llama 3.1 8B (8.03B params), vLLM v0.6.0, 5000 prompts at rps inf, max-num-seqs 256, 10 scheduler steps: 8,088
# tok/s, scaled to a 7.24B model as the plan scales every figure (time ~ params)
_H100_OFFLINE = 8088 * 8.03 / 7.24
GPUS = {
    "h100": GPU("H100 80GB", 79.6, _H100_OFFLINE, f"derived: 8,088 tok/s x 8.03B/7.24B params ({LAMBDA}, vLLM "
                "v0.6.0 table: Llama 3.1 8B, 1x H100, 5,000 prompts at rps inf, max-num-seqs 256, 10 scheduler steps)",
                3281, 989, "NVIDIA H100 SXM spec sheet"),
    "a100": GPU("A100 80GB", 80.0, _H100_OFFLINE * 1591 / 3281, f"derived: the H100's {_H100_OFFLINE:.0f} x A100/H100 "
                     f"1591/3281 (Mistral-7B-Instruct-v0.3, vLLM 0.5.4, 320 prompts; {LAMBDA})", 1591, 312,
                     "NVIDIA A100 spec sheet"),
    "l40s": GPU("L40S 48GB", 45.0, 1017, "derived: no L40S measurement found; the slower A40 48GB's 1017 "
                     "tok/s (Llama-3.1-8B, 50 concurrent, 100 in/600 out; https://databasemart.com/blog/vllm-gpu-"
                     "benchmark-a40) as a conservative stand-in (a serving figure: offline batches run faster)",
                     1017, 362, "NVIDIA L40S datasheet"),
    "rtx4090": GPU("RTX 4090", 24.0, SERVING_4090, "https://mushfiqrahman.dev/benchmarking-mistral-7b-on-rtx-4090-"
                        "vllm-concurrency-latency-and-capacity-planning/ (Mistral-7B-Instruct-v0.3, concurrency 48, "
                        "256 in/128 out; a serving figure: offline batches run faster)", SERVING_4090, 165,
                        "Ada whitepaper"),
}
