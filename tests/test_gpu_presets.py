"""The GPU presets, run here on the hub twins: real hub ids, splits, judge and reference,
served over HTTP on 127.0.0.1 to the unchanged clients; only sizes and device differ."""
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from nbutils.run import params as P
from nbutils.store.files import REPO_ROOT
from tests.conftest import cli, twin_run

pytestmark = pytest.mark.slow
ALPACA = REPO_ROOT.parent / "shared" / "alpaca_eval"


def client(hub_twins, code: str) -> subprocess.CompletedProcess:
    """Python ``code`` in a fresh process that sees the twins as the hub."""
    return subprocess.run([sys.executable, "-c", code], env=hub_twins.env, capture_output=True, text=True, cwd=REPO_ROOT)


def test_the_alpaca_eval_twin_fails_datasets_as_the_real_repo_does(hub_twins):
    """The twin carries the loading script: datasets 5 and alpaca_eval's own reference loader
    refuse it exactly as they refuse the real repo, and the JSON files are read instead."""
    proc = client(hub_twins, "import datasets; datasets.load_dataset('tatsu-lab/alpaca_eval', 'alpaca_eval_gpt4_baseline')")
    assert "Dataset scripts are no longer supported, but found alpaca_eval.py" in proc.stderr
    proc = client(hub_twins, "from alpaca_eval.constants import ALPACAEVAL_REFERENCE_OUTPUTS_2 as r; r()")
    assert "Dataset scripts are no longer supported" in proc.stderr
    proc = client(hub_twins, "from nbutils.sources import hub; r = hub.alpaca_eval('reference'); "
                             "print(len(r), r['generator'][0], r['instruction'][0][:40])")
    assert proc.returncode == 0, proc.stderr
    first = json.loads((ALPACA / "reference_gpt4_1106_preview.json").read_text())[0]
    assert proc.stdout.split(" ", 2)[:2] == ["805", "gpt4_1106_preview"]
    assert first["instruction"][:40] in proc.stdout


def test_snorkel_preset_runs_all_five_stages_on_the_twins(twin_snorkel, hub_twins):
    run = twin_snorkel
    log = (run.parent / "twin-snorkel.log").read_text()
    assert (run / "report.html").exists(), log
    # the runner fetched every hub model before the first stage started
    assert log.index("hub: mistralai/Mistral-7B-Instruct-v0.2") < log.index("hub: llm-blender/PairRM") \
        < log.index("iteration 1 · 01_generate")
    # stage 01 read the Snorkel dataset's train_iteration_<n> splits, sampling from the policy twin
    twin = client(hub_twins, "import datasets; d = datasets.load_dataset("
                             "'snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset', split='train_iteration_2'); "
                             "print('\\n'.join(d['prompt'][:8]))")
    generations = pd.read_parquet(run / "iter_2" / "generations.parquet")
    assert list(generations["prompt"]) == twin.stdout.strip().split("\n")
    assert set(pd.read_parquet(run / "iter_1" / "generations.parquet")["model"]) == {"mistralai/Mistral-7B-Instruct-v0.2"}
    # the model was fetched once as a snapshot, without its duplicate weight formats
    snapshot = next(hub_twins.hf_home.glob("hub/models--mistralai--Mistral-7B-Instruct-v0.2/snapshots/*"))
    files = {f.name for f in snapshot.iterdir()}
    assert "model.safetensors.index.json" in files and not files & {"consolidated.safetensors", "pytorch_model.bin"}
    # stage 03 dropped the optimizer checkpoints once the policy was saved
    for n in (1, 2):
        assert (run / f"iter_{n}" / "policy" / "config.json").exists()
        assert not (run / f"iter_{n}" / "dpo_checkpoints").exists()
    # stage 04 judged with PairRM against AlpacaEval's GPT-4-turbo reference, in the leaderboard's order
    board = pd.read_csv(run / "evaluation" / "leaderboard.csv")
    ours = board[(board["judge"] == "offline: llm-blender/PairRM vs gpt4_1106_preview") & (board["kind"] == "this run")]
    assert list(ours["model"]) == ["base", "iteration 1", "iteration 2", "iteration 2 best-of-2"]
    assert set(ours["n"]) == {8}
    reference = json.loads((ALPACA / "reference_gpt4_1106_preview.json").read_text())
    outputs = json.loads((run / "evaluation" / "iteration_2" / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == [r["instruction"] for r in reference[:8]]
    # on AlpacaEval: both GLMs for the offline rows, and the published outputs under the same judge
    assert ours[["lc_v1", "lc_minimal"]].notna().all().all()
    published = board[board["kind"] == "published outputs"].set_index("model")
    assert list(published.index) == ["Mistral-7B-Instruct-v0.2", "Snorkel-Mistral-PairRM-DPO", "SPPO-Mistral7B-PairRM"]
    assert set(published["judge"]) == set(ours["judge"]) and set(published["n"]) == {8}
    snorkel = json.loads((ALPACA / "outputs" / "Snorkel-Mistral-PairRM-DPO.json").read_text())[:8]
    assert published.loc["Snorkel-Mistral-PairRM-DPO", "avg_length"] == pytest.approx(
        sum(len(o["output"]) for o in snorkel) / 8)
    leaderboard = board[board["kind"] == "leaderboard"]
    assert set(leaderboard["judge"]) == {"AlpacaEval 2.0 (GPT-4-turbo), leaderboard"} and leaderboard["lc_minimal"].isna().all()
    check = json.loads((run / "evaluation" / "metrics.json").read_text())["04_evaluate"]["base_reproduction"]
    assert check["published"] == "Mistral-7B-Instruct-v0.2" and check["n"] == 8 and 0 <= check["win_rate"] <= 100
    report = (run / "report.html").read_text()
    assert "Base reproduced?" in report and "length_controlled_v1 GLM" in report and "length_controlled_minimal GLM" in report


def test_ultrafeedback_preset_generates_and_reranks_on_the_twins(hub_twins, runs_dir):
    twin_run(hub_twins, runs_dir, "--iterations", "1", "--stages", "01_generate,02_rerank")
    run = runs_dir / "ultrafeedback"  # base.yaml's run, apart from snorkel.yaml's
    generations = pd.read_parquet(run / "iter_1" / "generations.parquet")
    twin = pd.read_parquet(next(hub_twins.root.glob("mirrors/datasets/HuggingFaceH4/*/data/train_prefs-*")))
    assert list(generations["prompt_id"]) == list(twin["prompt_id"][:8])
    split = pd.read_parquet(next((run / "iter_1" / "preference_data" / "data").glob("train_iteration_1-*")))
    assert len(split) > 0 and {"chosen", "rejected", "all_rm_scores"} <= set(split.columns)


def test_snorkel_lc_preset_selects_length_controlled_pairs_on_the_twins(twin_snorkel, hub_twins, runs_dir):
    """From a copy of the snorkel run's iteration 1 (docs/recipes.md: the same samples, stage 01 saved)."""
    shutil.copytree(twin_snorkel / "iter_1", runs_dir / "snorkel-lc" / "iter_1")
    out = twin_run(hub_twins, runs_dir, "-f", "recipes/snorkel.yaml", "-f", "recipes/snorkel-lc.yaml",
                   "--iterations", "1", "--stages", "01_generate,02_rerank").stdout
    assert "iteration 1 · 01_generate: done for these params and inputs, skipped" in out
    assert "iteration 1 · 02_rerank: params changed (length_penalty, pair_selection), rerunning" in out, out
    config = json.loads((runs_dir / "snorkel-lc" / "iter_1" / "02_rerank.config.json").read_text())
    assert config["ranker"] == "llm-blender/PairRM" and config["pair_selection"] == "length_controlled"
    assert json.loads((runs_dir / "snorkel-lc" / "iter_1" / "metrics.json").read_text())["02_rerank"]["pairs"] > 0


def test_vllm_loads_a_folder_with_mistral_format_files_as_hf(hub_twins):
    """A Mistral repo's folder holds consolidated.safetensors + params.json beside the HF files;
    vLLM's "auto" would switch to Mistral's formats. The workbook asks for HF's explicitly."""
    repo = hub_twins.root / "mirrors" / "models" / "mistralai" / "Mistral-7B-Instruct-v0.2"
    assert (repo / "consolidated.safetensors").exists() and (repo / "params.json").exists()
    proc = client(hub_twins, f"""
from nbutils.generate.backends import VLLMBackend
from nbutils.generate.sampling import chat_prompt_ids
b = VLLMBackend({str(repo)!r}, dict(dtype="float32", seed=0, gpu_memory_utilization=0.1, enforce_eager=True, max_model_len=256,
                num_samples=2, temperature=0.7, top_p=0.9, max_new_tokens=8, device="cpu"))
print(type(b.tokenizer).__name__, len(b.generate(chat_prompt_ids(b.tokenizer, ["how do I start running"]), [1])[0]))
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "2" and "Mistral" not in proc.stdout.split()[-2]


def test_a_gpu_preset_refuses_to_start_without_cuda():
    proc = cli("run", "-f", "recipes/snorkel.yaml", "-p", "runs_dir", "/nonexistent", check=False)
    assert proc.returncode == 2
    assert "device: cuda, but CUDA is not usable" in proc.stderr and "-p device cpu" in proc.stderr
    assert not proc.stdout.strip()  # nothing ran, nothing was fetched


def test_each_preset_has_its_own_run_folder():
    names = {f: P.resolve([f] if f != "params/base.yaml" else [])[0]["run_name"]
             for f in ("params/base.yaml", "recipes/snorkel.yaml", "recipes/snorkel-lc.yaml")}
    assert len(set(names.values())) == 3, names


# The preflight tests come after a run has fetched the twins' datasets (twin_snorkel, shared with the
# suite): olah answers datasets' partial reads of a parquet file it has not served whole yet with
# bytes that are not parquet ("Parquet magic bytes not found"), a limit of the mirror, not of the hub.
def test_preflight_names_the_missing_cuda_first_then_prints_the_plan(twin_snorkel, hub_twins):
    proc = cli("preflight", "-f", "recipes/snorkel.yaml", check=False, env=hub_twins.env)
    assert proc.returncode == 1
    failing = proc.stdout.split("what fails:")[1].strip().splitlines()
    assert failing[0].startswith("1. CUDA: device: cuda, but CUDA is not usable"), proc.stdout
    for line in ("ok    model mistralai/Mistral-7B-Instruct-v0.2", "ok    model llm-blender/PairRM",
                 "ok    dataset snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset", "ok    dataset tatsu-lab/alpaca_eval"):
        assert line in proc.stdout
    assert "03_dpo_qlora" in proc.stdout and "Total: ~" in proc.stdout


def test_preflight_names_a_split_the_dataset_lacks(twin_snorkel, hub_twins):
    proc = cli("preflight", "-f", "recipes/snorkel.yaml", "-p", "device", "cpu", "-p", "num_iterations", "4",
               check=False, env=hub_twins.env)
    assert proc.returncode == 1
    assert "no split ['train_iteration_4']" in proc.stdout.split("what fails:")[1]
