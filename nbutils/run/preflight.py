"""``python -m nbutils preflight -f <presets>``: can this machine run this preset? No model
is loaded; it takes seconds (the hub checks need the network or the hub twins).

Checks, in order: CUDA and the GPU; the installed versions against the lock; RAM and
disk against what the plan says the run needs; the hub (token, access to each gated
model, every dataset id and split, AlpacaEval's files); ``OPENAI_API_KEY`` when the
official judge is asked for. The runner runs the cheap ones (no network) before every
run, and fetches the hub models before the first stage.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nbutils.store.files import REPO_ROOT, repo_path, size_text
from nbutils.sources.kinds import hub_ids, looks_local


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class PreflightError(RuntimeError):
    """What fails, numbered."""


def hub_models(values: dict) -> list[str]:
    """The hub model ids the run loads (policy, ranker, judge), each once."""
    names = [values["base_model"], values["ranker"], values.get("judge") or values["ranker"]]
    return hub_ids(names)


def cuda_check(values: dict) -> Check:
    from nbutils.exec.devices import DeviceError, resolve_device
    try:
        if resolve_device(values["device"]) == "cpu":
            return Check("CUDA", True, "not used: the CPU" + (" (device: cpu)" if values["device"] == "cpu" else ""))
    except DeviceError as e:
        return Check("CUDA", False, str(e))
    import torch
    free, total = torch.cuda.mem_get_info()
    devices, here = values.get("devices", 1), torch.cuda.device_count()
    if devices > here:
        return Check("devices", False, f"devices: {devices}, but this machine has {here} GPU(s) "
                     f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); set devices to at "
                     f"most {here}, or run on a machine with {devices}")
    return Check("device", True, f"{torch.cuda.get_device_name()}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
                 + (f"; {here} GPUs, {devices} used" if here > 1 else ""))


def version_check() -> Check:
    """Installed versions of the locked packages (CUDA torch: requirements/gpu.txt, else cpu.txt)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    lock = REPO_ROOT / "requirements" / ("cpu.txt" if torch.version.cuda is None else "gpu.txt")
    wrong = []
    for name, pinned in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M):
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "not installed"
        if have != pinned:
            wrong.append(f"{name} {have} (lock: {pinned})")
    if wrong:
        return Check("versions", False, f"differ from {lock.relative_to(REPO_ROOT)}: {', '.join(wrong[:8])}"
                     + (f" and {len(wrong) - 8} more" if len(wrong) > 8 else "") + "; reinstall from the lock")
    return Check("versions", True, f"as {lock.relative_to(REPO_ROOT)}")


def needs(values: dict, table) -> dict:
    """Disk (GiB: what the plan says the run writes, the hub cache included) and RAM (GiB: a
    7B model's bf16 weights pass through RAM on the CPU; on a GPU they load straight onto it)."""
    from nbutils.run.plan import model_params
    model_gib = model_params(values["base_model"]) * 2 / 2**30
    on_gpu = values["device"] != "cpu"
    return {"disk_gib": float(table["disk_gib"].sum()), "ram_gib": 4 + model_gib * (0.5 if on_gpu else 1.5)}


def resource_checks(values: dict, need: dict) -> list[Check]:
    """Free disk where the runs go and available RAM against ``need``."""
    import psutil
    from huggingface_hub import constants
    path = repo_path(values["runs_dir"])
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free / 2**30
    cache = Path(constants.HF_HUB_CACHE)
    elsewhere = f" (the hub cache, {cache}, is on another disk)" if cache.exists() and \
        cache.stat().st_dev != path.stat().st_dev else ""
    ram = psutil.virtual_memory().available / 2**30
    return [Check("disk", free >= need["disk_gib"], f"{size_text(free * 2**30)} free at {path}, the run writes "
                  f"~{size_text(need['disk_gib'] * 2**30)}{elsewhere}"),
            Check("RAM", ram >= need["ram_gib"], f"{ram:.1f} GiB available, the run needs ~{need['ram_gib']:.1f} GiB")]


def secret_checks(values: dict) -> list[Check]:
    if not values.get("official_judge"):
        return []
    ok = bool(os.environ.get("OPENAI_API_KEY"))
    return [Check("OPENAI_API_KEY", ok, "set" if ok else "official_judge: true needs OPENAI_API_KEY in the environment")]


def hub_checks(values: dict) -> list[Check]:
    """Token, access to each hub model, each dataset id and split, AlpacaEval's files."""
    from huggingface_hub import HfApi, get_hf_file_metadata, get_token, hf_hub_url

    from nbutils.sources.hub import ALPACA_EVAL, ALPACA_EVAL_FILES, explain
    api, out = HfApi(), [Check("HF token", True, "set" if get_token() else "none (fine unless a repo is gated)")]
    for repo in hub_models(values):
        try:  # the metadata is public even for a gated repo; reading a file needs the access
            info = api.model_info(repo, revision="main")
            get_hf_file_metadata(hf_hub_url(repo, "config.json"))
            out.append(Check(f"model {repo}", True, "readable" + (f" (gated: {info.gated}, access granted)"
                                                                  if info.gated else "")))
        except Exception as e:
            out.append(Check(f"model {repo}", False, str(explain(repo, e))))
    splits = ([values["prompts_split"].format(iteration=n) for n in range(1, values["num_iterations"] + 1)]
              if "{iteration}" in values["prompts_split"] else [values["prompts_split"]])
    wanted = {(values["prompts_dataset"], s) for s in splits} | {(values["eval_dataset"], values["eval_split"])}
    for source in sorted({s for s, _ in wanted}):
        if looks_local(source):
            continue
        try:
            files = set(api.list_repo_files(source, repo_type="dataset"))
            if source == ALPACA_EVAL:
                missing = set(ALPACA_EVAL_FILES.values()) - files
                out.append(Check(f"dataset {source}", not missing, f"missing {sorted(missing)}" if missing
                                 else "its JSON files are there (read without its loading script)"))
                continue
            from datasets import get_dataset_split_names
            have = set(get_dataset_split_names(source))
            missing = sorted(s for d, s in wanted if d == source and s not in have)
            out.append(Check(f"dataset {source}", not missing,
                             f"no split {missing} (it has {sorted(have)})" if missing else f"splits {sorted(have)}"))
        except Exception as e:
            out.append(Check(f"dataset {source}", False, str(explain(source, e, "dataset"))))
    return out


def cheap_checks(values: dict, needs: dict) -> list[Check]:
    """What the runner checks before every run: no network, a second or two."""
    return [cuda_check(values), version_check(), *resource_checks(values, needs), *secret_checks(values)]


def failures(checks: list[Check]) -> str:
    return "\n".join(f"  {i}. {c.name}: {c.detail}" for i, c in enumerate((c for c in checks if not c.ok), 1))


def report(checks: list[Check]) -> str:
    return "\n".join(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks)


def fetch_models(values: dict) -> dict[str, str]:
    """Download each hub model the run loads (and PairRM's backbone) before the first stage;
    returns {hub id: local snapshot}."""
    from nbutils.sources.hub import model_snapshot
    from nbutils.compat.llm_blender import backbone_name
    local = {}
    for repo in hub_models(values):
        print(f"hub: {repo}", flush=True)
        local[repo] = str(model_snapshot(repo))
        config = Path(local[repo]) / "config.json"
        if config.is_file() and '"ranker_type"' in config.read_text():
            backbone_name(Path(local[repo]))  # microsoft/deberta-v3-large
    return local


def gpu_here() -> str:
    """The plan's name for this machine's GPU (the nearest card by memory when it is not in the
    table); ``h100``, the presets' target, when there is none."""
    from nbutils.exec.devices import cuda_problem
    from nbutils.run.plan import GPUS
    if cuda_problem():
        return "h100"
    import torch
    name, total = torch.cuda.get_device_name(), torch.cuda.mem_get_info()[1] / 2**30
    for key in GPUS:
        if key.replace("rtx", "").upper() in name.upper():
            return key
    return min(GPUS, key=lambda k: abs(GPUS[k].memory_gib - total))


def before_run(values: dict) -> None:
    """The runner's checks: CUDA first (nothing is fetched for a run that cannot start), the hub
    models fetched, then disk and RAM for the models as downloaded, and the judge's key."""
    from nbutils.run.plan import plan
    if not (device := cuda_check(values)).ok:
        raise PreflightError("this machine cannot run the preset:\n" + failures([device]))
    local = fetch_models(values)
    sized = {**values, "base_model": local.get(values["base_model"], values["base_model"])}
    checks = resource_checks(values, needs(sized, plan(sized, gpu_here()))) + secret_checks(values)
    if problems := failures(checks):
        raise PreflightError("this machine cannot run the preset:\n" + problems)
    if not (versions := version_check()).ok:
        print(f"warning: versions {versions.detail}", flush=True)


def preflight(values: dict, sources: dict, dry_run: bool = False, gpu: str | None = None) -> int:
    """``python -m nbutils preflight``: the checks (unless ``dry_run``), then the plan; 1 when
    anything fails, with a numbered list."""
    from nbutils.run.plan import fits, format_plan, plan
    gpu = gpu or gpu_here()
    table = plan(values, gpu)
    checks = [] if dry_run else [cuda_check(values), version_check(), *resource_checks(values, needs(values, table)),
                                 *secret_checks(values), *hub_checks(values)]
    if checks:
        print("checks:\n" + report(checks) + "\n")
    print(format_plan(table, gpu))
    problems = [f"{c.name}: {c.detail}" for c in checks if not c.ok] + list(fits(table, gpu))
    if problems:
        print("\nwhat fails:\n" + "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1)))
    return 1 if problems else 0
