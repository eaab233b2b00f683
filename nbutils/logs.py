"""Library logs: below WARNING off in the notebooks, the runner and their child processes.

One switch brings them back: ``NBUTILS_LOG_LEVEL=INFO`` (or ``DEBUG``) in the environment, or
``python -m nbutils run --verbose``. Messages a user cannot act on are filtered where they arise,
each with the reason beside it.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager

LEVEL_ENV = "NBUTILS_LOG_LEVEL"
LIBRARIES = ("vllm", "transformers", "datasets", "huggingface_hub", "bitsandbytes", "accelerate", "peft",
             "trl", "torch", "alpaca_eval", "llm_blender", "papermill", "nbconvert", "traitlets",
             "matplotlib", "httpx", "urllib3", "filelock", "fsspec", "numexpr")


class _Drop(logging.Filter):
    """Drops the records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def level() -> str:
    """The library log level: ``WARNING`` unless ``NBUTILS_LOG_LEVEL`` says otherwise."""
    return os.environ.get(LEVEL_ENV, "WARNING").upper()


def quiet() -> None:
    """Library loggers of this process at :func:`level`, and the environment variables that set the
    same in child processes (vLLM's engine, the sampling child, papermill's kernels)."""
    lvl = level()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", lvl)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", lvl.lower())
    os.environ.setdefault("DATASETS_VERBOSITY", lvl.lower())
    os.environ.setdefault("HF_HUB_VERBOSITY", lvl.lower())
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(lvl)
    # bitsandbytes' CPU backend tries, at import, to fetch a faster 4-bit kernel from the hub and
    # says "pip install kernels" when it cannot: the CPU path works without it (and no GPU uses it)
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_Drop("kernels-community"))
    # the Trainer orders checkpoints by mtime and says so when two were saved within a second
    # (tiny models do that): it then orders them by step number, which is right
    logging.getLogger("transformers.trainer_utils").addFilter(_Drop("mtime may not be reliable"))
    if lvl != "WARNING":
        return
    # pkg_resources is imported by alpaca_eval 0.6.6 (pinned); the fix is theirs
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=DeprecationWarning)
    # tqdm's notebook bars need ipywidgets, which the environment installs; older kernels may lack it
    warnings.filterwarnings("ignore", message="IProgress not found")
    # transformers 5 draws a bar for each model it loads, saves or dequantizes (a second each on a small
    # model, five in a stage-03 cell); its hub downloads keep theirs
    import importlib.util
    if importlib.util.find_spec("transformers"):
        from transformers.utils import logging as transformers_logging
        transformers_logging.set_tqdm_hook(_without_short_bars)


SHORT_BARS = ("Loading weights", "Writing model shards", "Converting and de-quantizing GGUF tensors")


def _without_short_bars(factory, args, kwargs):
    """transformers' tqdm hook: the bars of :data:`SHORT_BARS` disabled, every other bar as it was."""
    return factory(*args, **{**kwargs, "disable": True} if kwargs.get("desc") in SHORT_BARS else kwargs)


@contextmanager
def c_stderr_silenced():
    """Silence what C code writes to file descriptor 2 inside the block (Python's own errors are
    raised as usual). For liblinear (alpaca_eval's GLM, through scikit-learn), which prints
    "WARNING: class label 0 specified in weight is not found" whenever a cross-validation fold
    holds one class only: expected with few instructions, harmless, and not ours to change."""
    if level() != "WARNING":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
