"""The hub module, the device check, the plan's CLI and the checkpoint clean-up (no model runs)."""
import pytest

from nbutils.sources import hub
from nbutils.exec.devices import DeviceError, cuda_problem, resolve_device
from nbutils.dpo.training import drop_checkpoints
from tests.conftest import cli


def test_a_snapshot_skips_other_formats_of_the_same_weights():
    mistral = ["config.json", "model-00001-of-00003.safetensors", "model.safetensors.index.json",
               "pytorch_model-00001-of-00003.bin", "consolidated.safetensors", "params.json", "tokenizer.model"]
    skips = hub.weight_skips(mistral)
    assert {"consolidated*", "*.bin"} <= set(skips) and "params.json" not in skips
    assert "*.bin" not in hub.weight_skips(["config.json", "pytorch_model.bin", "spm.model", "tf_model.h5"])


@pytest.mark.skipif(cuda_problem() is None, reason="this machine has a usable GPU")
def test_device_cuda_without_a_gpu_is_an_error_that_says_what_to_do():
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="-p device cpu"):
        resolve_device("cuda")


def test_checkpoints_are_dropped_once_the_policy_is_saved_unless_kept(tmp_path):
    for keep in (True, False):
        folder = tmp_path / str(keep) / "dpo_checkpoints"
        (folder / "checkpoint-2").mkdir(parents=True)
        (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"x" * 2**21)
        stats = drop_checkpoints(folder, keep)
        assert folder.exists() == keep and stats["checkpoints_kept"] == keep and stats["checkpoints_gib"] > 0


def test_dry_run_prints_the_plan_per_stage_with_memory_hours_and_disk():
    for args in (["preflight", "--dry-run", "--gpu", "rtx4090"], ["run", "--dry-run"]):
        proc = cli(*args, "-f", "recipes/snorkel.yaml")
        assert "peak_gpu_gib" in proc.stdout and "hours" in proc.stdout and "disk_gib" in proc.stdout
        assert proc.stdout.count("03_dpo_qlora") >= 3 and "Sources:" in proc.stdout
    assert "RTX 4090" in cli("preflight", "--dry-run", "--gpu", "rtx4090", "-f", "recipes/snorkel.yaml").stdout
