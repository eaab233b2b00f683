"""Stage 03 across processes (``accelerate launch``, DDP over gloo on the CPU) and with every weight
trained (``finetuning: full``), on the tiny preset; the launch command and the refusals."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nbutils.dpo import hardware, launch, launch_command, training
from nbutils.store.files import REPO_ROOT
from nbutils.generate.policies import base_model_path
from tests.conftest import LOOP, cli, metrics, params_args


def stage_03(runs_dir, loop, run_name: str, **params) -> tuple[Path, list[str]]:
    """A run whose iteration 1 holds the loop's pairs (its iteration 1), and the runner's arguments
    for stage 03 on it with ``params``."""
    run = runs_dir / run_name
    shutil.copytree(loop / "iter_1" / "preference_data", run / "iter_1" / "preference_data")
    return run, ["run", "-f", "recipes/tiny.yaml", "--stages", "03_dpo_qlora", "--iterations", "1",
                 *params_args(runs_dir=runs_dir, run_name=run_name, **{**LOOP, **params})]


def losses(m: dict) -> list[float]:
    return [s["loss"] for s in m["steps"]]


def loads_as_a_model(policy: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(policy)
    assert AutoTokenizer.from_pretrained(policy).chat_template  # the chat template came with it
    return model


def workers_of(run: Path) -> list[int]:
    """Pids of processes whose command line names ``run`` (the launcher and its workers)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(run) in cmdline and "nbutils.dpo" in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_ddp_on_two_processes_trains_resumes_and_merges_once(loop, runs_dir):
    """``distributed: ddp, devices: 2``: two gloo processes share each batch (half the loop's steps per
    epoch). Killed (the runner, SIGKILL) at its second checkpoint, no training process outlives it; the
    rerun resumes there, and its loss falls. The first process wrote the result; the notebook merged
    once, after the processes ended; the policy loads in transformers."""
    run, args = stage_03(runs_dir, loop, "ddp", distributed="ddp", devices=2, load_in_4bit=False,
                         num_train_epochs=4.0, save_steps=1)
    work = run / "iter_1" / "dpo_launch"
    proc = subprocess.Popen([sys.executable, "-m", "nbutils", *args], cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = run / "iter_1" / "dpo_checkpoints" / "checkpoint-2"
    deadline = time.time() + 300
    while not (second.is_dir() and training.checkpoint_complete(second, 2)) and time.time() < deadline:
        time.sleep(0.02)
    assert workers_of(run), "the training processes never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "result.json").exists(), "training ended before the kill"
    deadline = time.time() + 30
    while workers_of(run) and time.time() < deadline:
        time.sleep(0.2)
    assert workers_of(run) == [], "a training process outlived the runner"

    cli(*args)
    m, result = metrics(run)["03_dpo_qlora"], json.loads((work / "result.json").read_text())
    assert result["processes"] == 2 and result["settings"]["load_in_4bit"] is False
    assert int(m["resumed_from_checkpoint"].split("-")[1]) >= 2
    batches = math.ceil(m["train_pairs"] / 8)  # per_device_train_batch_size 8: each process takes every other one
    assert m["global_steps"] == len(m["steps"]) == 4 * math.ceil(batches / 2)  # 4 epochs
    assert min(losses(m)[-2:]) < losses(m)[0] and m["train_loss"] < losses(m)[0]
    assert m["merge_same_top1"] and m["merge_max_logprob_difference"] < 1e-4
    policy = run / "iter_1" / "policy"
    assert (policy / "model.safetensors").stat().st_mtime > (work / "result.json").stat().st_mtime  # merged after
    assert not (policy / "adapter_config.json").exists() and (run / "iter_1" / "adapter" / "adapter_config.json").exists()
    executed = json.loads((run / "iter_1" / "03_dpo_qlora.ipynb").read_text())
    outputs = [json.dumps(o) for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert sum("merge_max_logprob_difference" in o for o in outputs) == 1  # the merge cell's table, once
    assert "merge" not in (work / "train.log").read_text().lower()  # no training process merged
    loads_as_a_model(policy)
    assert workers_of(run) == []


@pytest.mark.slow
def test_full_finetuning_saves_the_trained_model_as_the_policy(loop, runs_dir):
    """``finetuning: full`` in the notebook's process: every weight trains (no adapter, nothing merged),
    the saved policy loads and gives the trained model's log-probs, and the loss falls."""
    run, args = stage_03(runs_dir, loop, "full", finetuning="full", max_steps=4)
    cli(*args)
    m = metrics(run)["03_dpo_qlora"]
    assert m["global_steps"] == 4 and m["linear_4bit_layers"] == 0 and m["device"]["load_in_4bit"] is False
    assert m["saved_same_top1"] and m["saved_max_logprob_difference"] < 1e-4
    assert "merge_max_logprob_difference" not in m
    assert min(losses(m)[-2:]) < losses(m)[0]
    assert not (run / "iter_1" / "adapter").exists() and not (run / "iter_1" / "dpo_checkpoints").exists()
    model = loads_as_a_model(run / "iter_1" / "policy")
    base = dict(loads_as_a_model(Path(base_model_path("tiny-mistral"))).named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, base[n])]
    assert len(changed) > len(base) // 2  # not only the layers LoRA would adapt: most weights moved


def test_launch_command_for_each_mode_and_for_more_than_one_machine():
    spec = Path("runs/tiny/iter_1/dpo_launch/spec.json")
    ddp = launch_command.command("ddp", 2, 1, spec, env={})
    assert ddp[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and ddp[-3:] == ["-m", "nbutils.dpo.worker", str(spec)]
    flags = dict(zip(ddp[3:-3:2], ddp[4:-3:2]))
    assert flags == {"--config_file": str(REPO_ROOT / "params/accelerate/ddp.yaml"), "--num_processes": "2",
                     "--num_machines": "1", "--main_process_port": "0"}
    assert "--cpu" not in ddp  # accelerate would start one process
    for mode in ("zero3", "fsdp2"):
        cmd = launch_command.command(mode, 8, 1, spec, env={})
        assert cmd[cmd.index("--config_file") + 1].endswith(f"params/accelerate/{mode}.yaml")
    env = {"SLURM_NODEID": "1", "MASTER_ADDR": "10.0.0.1"}
    multi = launch_command.command("zero3", 8, 2, spec, env=env)
    flags = dict(zip(multi[3:-3:2], multi[4:-3:2]))
    assert (flags["--num_processes"], flags["--num_machines"], flags["--machine_rank"], flags["--main_process_ip"],
            flags["--main_process_port"]) == ("16", "2", "1", "10.0.0.1", "29500")
    flags = launch_command.machine_flags(2, {**env, "MACHINE_RANK": "0", "MASTER_PORT": "6000"})
    assert flags == ["--machine_rank", "0", "--main_process_ip", "10.0.0.1", "--main_process_port", "6000"]
    with pytest.raises(ValueError, match=r"num_nodes: 2 needs MACHINE_RANK \(or SLURM_NODEID\) and MASTER_ADDR"):
        launch_command.command("ddp", 1, 2, spec, env={})
    with pytest.raises(ValueError, match="distributed: 'none' has no accelerate config"):
        launch_command.command("none", 1, 1, spec, env={})
    # under SLURM, from the first node: srun starts the same launch on every node, each with its own rank
    slurm = launch_command.command("zero3", 8, 2, spec, env={"SLURM_JOB_ID": "7", "SLURM_NODEID": "0",
                                                             "MASTER_ADDR": "node-a"})
    assert slurm[:6] == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    assert slurm[6:8] == ["bash", "-c"] and '--machine_rank "$SLURM_NODEID" --main_process_ip node-a' in slurm[8]


def test_accelerate_configs_are_trls_with_the_processes_left_to_the_command_line():
    import yaml
    trl_configs = Path(__import__("trl").__file__).parent / "accelerate_configs"
    for mode, theirs in (("ddp", "multi_gpu"), ("zero3", "zero3"), ("fsdp2", "fsdp2")):
        ours = yaml.safe_load((REPO_ROOT / "params" / "accelerate" / f"{mode}.yaml").read_text())
        trl = yaml.safe_load((trl_configs / f"{theirs}.yaml").read_text())
        assert "num_processes" not in ours and ours["mixed_precision"] == "no"
        assert {k: v for k, v in trl.items() if k != "num_processes"} | {"mixed_precision": "no"} == ours


def test_sharded_or_full_training_resolves_load_in_4bit_auto_to_false_and_refuses_what_it_cannot_run():
    for mode in ("zero3", "fsdp2"):
        value, why = hardware.resolve_load_in_4bit("auto", None, None, distributed=mode)
        assert value is False and mode in why
    value, why = hardware.resolve_load_in_4bit("auto", 24.0, 80.0, finetuning="full")
    assert value is False and "finetuning: full" in why
    assert hardware.resolve_load_in_4bit("auto", None, None, distributed="ddp")[0] is True  # DDP: QLoRA as before
    for mode in ("zero3", "fsdp2"):  # accelerate would train with plain DDP on the CPU
        with pytest.raises(RuntimeError, match=f"distributed: {mode} shards the weights over GPUs.*distributed: ddp"):
            launch_command.preflight(mode, 2, gpu=False)
    if __import__("importlib").util.find_spec("deepspeed") is None:
        with pytest.raises(RuntimeError, match=r"distributed: zero3 needs DeepSpeed.*requirements/gpu.txt"):
            launch_command.preflight("zero3", 2, gpu=True)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="devices: 2 but this machine has 0 GPU"):
            launch_command.preflight("ddp", 2, gpu=True)


def test_a_failed_launch_names_the_log_and_shows_the_workers_traceback(tmp_path):
    text = ("Traceback (most recent call last):\n  File \"worker.py\", line 1, in <module>\n"
            "TypeError: bad spec\nW1125 agent: Sending process 17 closing signal SIGTERM\n"
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n  rank: 1\n")
    assert launch.first_error(text).splitlines()[-1] == "TypeError: bad spec"
    with pytest.raises(RuntimeError) as failed:
        launch.run([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], tmp_path, 1)
    assert "exit code 3" in str(failed.value) and str(tmp_path / "train.log") in str(failed.value)
    assert (tmp_path / "train.log").read_text() == "hello\n" and not (tmp_path / "launcher.pid").exists()
