"""What kind of thing a name is: a built-in tiny model, a real model shipped in a PyPI wheel, a
local file or folder, a Python function ``module:function``, the policy itself as a judge
(``self``), or a hub id. Asked by the params rules (is the name valid?)
and by the loaders (where do its files come from?), so both read a name the same way."""
from __future__ import annotations

import re

from nbutils.store.files import repo_path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
TINY_MODELS = ("tiny-mistral",)    # built locally by nbutils.tiny.policy
TINY_RANKERS = ("tiny-pairrm",)    # built locally by nbutils.tiny.ranker
PACKAGED_MODELS = ("smollm2-135m-instruct",)  # converted from a PyPI wheel by nbutils.packaged
SELF = "self"                      # ranker/judge: the policy judges its own answers (nbutils.rerank.self_judge)


def looks_local(name: str) -> bool:
    """A path (relative to the repository root, or absolute), not a hub id."""
    return name.startswith((".", "/", "~")) or name.endswith(LOCAL_SUFFIXES) or repo_path(name).exists()


def is_function_spec(name: str) -> bool:
    """``module:function`` (a Python reward function), not a path."""
    return bool(FUNCTION.match(name)) and not looks_local(name)


def is_tiny(name: str) -> bool:
    return name in TINY_MODELS + TINY_RANKERS


def kind(name: str) -> str:
    """``tiny``, ``packaged``, ``self``, ``function``, ``local`` or ``hub`` (anything else is ``hub``
    too: the hub says)."""
    if is_tiny(name):
        return "tiny"
    if name in PACKAGED_MODELS:
        return "packaged"
    if name == SELF:
        return "self"
    if is_function_spec(name):
        return "function"
    return "local" if looks_local(name) else "hub"


def hub_ids(names) -> list[str]:
    """The names that are hub ids, each once, in order."""
    return list(dict.fromkeys(n for n in names if n and kind(n) == "hub"))
