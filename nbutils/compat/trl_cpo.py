"""TRL 1.16's ``CPOTrainer`` (``trl.experimental.cpo``), which stage 03 runs for SimPO
(``loss_type: simpo``, :mod:`nbutils.dpo.losses`), where it differs from ``DPOTrainer`` in what the
workbook touches:

* It lives in ``trl.experimental``, whose import warns (``TRLExperimentalWarning``) in every notebook
  run. The workbook pins TRL and tests this trainer (``tests/test_losses.py``), so the notice is
  silenced here, around this one import, and nowhere else.
* Its tokenized pairs hold prompt + answer in ``chosen_input_ids`` and ``rejected_input_ids``,
  already truncated to ``max_length`` (DPO's hold ``prompt_ids``, ``chosen_ids``, ``rejected_ids``
  apart, truncated later by the collator): :func:`sequence_columns`.
* Its batches keep the chosen and rejected sequences apart (``chosen_attention_mask``,
  ``rejected_attention_mask``, each padded to its own longest) and pad both to the longer when it
  concatenates them for the forward pass (DPO's batch is concatenated already: ``attention_mask``):
  :func:`batch_tokens`.
* It takes no ``ref_model``: SimPO has no reference.
"""
from __future__ import annotations

import functools
import warnings

DPO_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")  # DPOTrainer's tokenized pair
CPO_COLUMNS = ("chosen_input_ids", "rejected_input_ids")  # CPOTrainer's: prompt + answer each


@functools.cache
def cpo_classes():
    """(CPOConfig, CPOTrainer), imported without trl.experimental's notice."""
    from trl.import_utils import TRLExperimentalWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.cpo import CPOConfig, CPOTrainer
    return CPOConfig, CPOTrainer


def sequence_columns(column_names) -> tuple[str, ...]:
    """The tokenized pair's columns: DPO's (prompt, chosen, rejected ids) or CPO's (chosen and
    rejected sequences, prompt included)."""
    for columns in (DPO_COLUMNS, CPO_COLUMNS):
        if set(columns) <= set(column_names):
            return columns
    raise ValueError(f"no tokenized pairs in columns {list(column_names)}: neither DPOTrainer's {DPO_COLUMNS} "
                     f"nor CPOTrainer's {CPO_COLUMNS} (TRL {trl_version()}; this workbook is tested with 1.16)")


def sequence_lengths(columns: tuple[str, ...], *ids, max_length: int) -> list[int]:
    """Per pair, the tokens of its longer sequence (prompt + answer), capped at ``max_length``: what
    a batch holding the pair is padded to. ``ids``: the lists of ``columns``, in their order."""
    if columns == DPO_COLUMNS:
        prompt, chosen, rejected = ids
        return [min(len(p) + max(len(c), len(r)), max_length) for p, c, r in zip(prompt, chosen, rejected)]
    return [min(max(len(c), len(r)), max_length) for c, r in zip(*ids)]


def batch_tokens(batch: dict) -> tuple[int, int]:
    """(real, padding) tokens of one collated batch, chosen and rejected sequences together, as the
    forward pass sees them."""
    masks = [batch["attention_mask"]] if "attention_mask" in batch else \
        [batch["chosen_attention_mask"], batch["rejected_attention_mask"]]
    width = max(m.shape[1] for m in masks)
    real = sum(int(m.sum()) for m in masks)
    return real, sum(m.shape[0] for m in masks) * width - real


def trl_version() -> str:
    import trl
    return trl.__version__
