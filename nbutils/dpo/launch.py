"""Stage 03 across processes: ``accelerate launch`` runs :mod:`nbutils.dpo.worker` in ``devices`` x
``num_nodes`` processes (``distributed``: ddp, zero3 or fsdp2, configured by
``params/accelerate/<distributed>.yaml``).

The notebook's process writes the workers' spec (``iter_<n>/dpo_launch/spec.json``) and starts the
launcher in a session of its own that dies with it (``PR_SET_PDEATHSIG``, set before the launcher's
program starts; each worker dies with the launcher the same way), so no training process outlives
the notebook. What the processes print streams into the cell line by line, and all of it into
``dpo_launch/train.log``; library noise is left out where it arises, as in the notebook's process (each
worker calls ``nbutils.logs.quiet``; no progress bars but the notebook's own). The first process's steps
(``progress.json``) drive a progress bar; its ``result.json`` (and, with ``finetuning: full``,
``trained_logprobs.pt``) come back to the notebook.

The command line itself, and what more than one machine needs: :mod:`nbutils.dpo.launch_command`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbutils.dpo.launch_command import command, preflight
from nbutils.store.files import REPO_ROOT, checkout_first


def folder(stage) -> Path:
    """Where the launch keeps its spec, log, progress and result: ``iter_<n>/dpo_launch/``."""
    return stage.run.dpo_launch(stage["iteration"])


def child_env(devices: int) -> dict:
    """The launcher's environment: this checkout first on ``PYTHONPATH`` (the workers import the same
    nbutils), CPU threads shared between the processes (torchrun prints a banner when it sets them
    itself), and no progress bars of datasets or transformers (one per process, in a pipe: noise)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = checkout_first(env.get("PYTHONPATH"))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too
    return env


def train(stage, settings: dict, policy_path: str) -> dict:
    """Stage 03's training in ``accelerate launch``'s processes; returns what the first one wrote:
    ``train_stats``, ``steps``, ``memory``, ``data_stats``, ``settings`` (and ``trained_logprobs``,
    with ``finetuning: full``)."""
    p, work = stage.params, folder(stage)
    preflight(p["distributed"], p["devices"], settings["gpu"])
    work.mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "progress.json", "trained_logprobs.pt"):
        (work / name).unlink(missing_ok=True)  # an earlier attempt's
    from nbutils.store.files import write_json
    resolved = {k: settings[k] for k in ("load_in_4bit", "use_liger_kernel")}
    write_json({"params": p, "resolved": resolved, "policy_path": str(policy_path), "folder": str(work)},
               work / "spec.json")
    run(command(p["distributed"], p["devices"], p["num_nodes"], work / "spec.json"), work, p["devices"])
    if not (work / "result.json").is_file():
        raise RuntimeError(f"the training processes ended without writing {work / 'result.json'}; "
                           f"their output is in {work / 'train.log'}")
    result = json.loads((work / "result.json").read_text())
    if (work / "trained_logprobs.pt").is_file():
        import torch
        result["trained_logprobs"] = torch.load(work / "trained_logprobs.pt")
    return result


def run(cmd: list[str], work: Path, devices: int) -> None:
    """Run ``cmd`` (the launcher) in a session of its own that dies with this process; stream its
    output into ``work/train.log`` and (blank lines left out) the cell; show ``work/progress.json``
    as a bar. An interrupt (or any error here) kills the launcher, and with it the workers."""
    import queue
    import signal
    import subprocess
    import threading

    from tqdm.auto import tqdm

    from nbutils.exec.processes import started, still_running
    log, pidfile = work / "train.log", work / "launcher.pid"
    earlier = still_running(pidfile)
    if earlier:  # a launch of an earlier attempt, from a kernel that is not ours
        raise RuntimeError(f"an earlier attempt still trains in {work} (pid {earlier}, see {pidfile}): let it "
                           f"finish, or stop it (kill {earlier}), then rerun")
    lines: queue.Queue = queue.Queue()
    with open(log, "w") as out, tqdm(desc="DPO steps", unit="step") as bar:
        proc = subprocess.Popen([sys.executable, "-m", "nbutils.dpo.launch", str(os.getpid()), *cmd], cwd=REPO_ROOT,
                                env=child_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)
        pidfile.write_text(f"{proc.pid} {started(proc.pid)}\n")
        threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
        try:
            while (line := next_line(lines)) is not None:
                out.write(line)
                out.flush()
                if line.strip():
                    bar.write(line.rstrip("\n"))
                show_progress(bar, work / "progress.json")
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the workers die with the launcher
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pidfile.unlink(missing_ok=True)
    if code:
        raise RuntimeError(f"stage 03's training processes failed (exit code {code}); their whole output is in "
                           f"{log}:\n{first_error(log.read_text())}")


def first_error(text: str, lines: int = 25) -> str:
    """The first traceback in a failed launch's output (the worker's, before the launcher's summary of
    it), or the output's last lines."""
    rows = text.splitlines()
    start = next((i for i, row in enumerate(rows) if row.startswith("Traceback")), None)
    if start is None:
        return "\n".join(rows[-lines:])
    end = next((i for i in range(start + 1, len(rows)) if rows[i] and not rows[i][0].isspace()
                and not rows[i].startswith(("Traceback", "During handling", "The above exception"))), len(rows) - 1)
    return "\n".join(rows[start:end + 1][-lines:])


def pump(stream, lines) -> None:
    """Put each line of ``stream`` into the queue ``lines``, then None (its end)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def next_line(lines) -> str | None:
    """The next line of output, "" when none came within half a second, None at its end."""
    import queue
    try:
        return lines.get(timeout=0.5)
    except queue.Empty:
        return ""


def show_progress(bar, path: Path) -> None:
    """Move ``bar`` to the step the first process last wrote to ``path`` (``{"step", "max_steps"}``)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if bar.total != state["max_steps"]:
        bar.reset(total=state["max_steps"])  # a notebook bar's widget learns its length here
    bar.update(state["step"] - bar.n)


def main(argv: list[str]) -> None:
    """``python -m nbutils.dpo.launch <parent pid> <program> <args...>``: die with the parent (the
    notebook's process), then become ``program`` (the launcher), which keeps that."""
    from nbutils.exec.processes import die_with_parent
    die_with_parent(int(argv[0]))
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
