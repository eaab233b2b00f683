"""Stage 04: AlpacaEval-style evaluation, offline judge, LC win rate, best-of-N, anchors."""
import json

import numpy as np
import pandas as pd
import pytest

from nbutils import manifests
from nbutils.compat import alpaca_eval as alpaca_compat

from nbutils.evaluate import answers as eval_outputs

from nbutils.evaluate import judging as evaluation
from nbutils.run import params as P
from nbutils.generate.prompts import PromptError, load_prompt_source
from nbutils.files import write_json
from nbutils.run.stage import stage_for
from tests.conftest import cli

ANCHORS = {"Mistral-7B-Instruct-v0.2": 14.72, "Snorkel-Mistral-PairRM-DPO": 30.22,
           "Snorkel-Mistral-PairRM-DPO-best-of-16": 34.86}


def synthetic_annotations(quality: float, length_bias: float, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A judge that prefers the model with probability ``quality`` at equal length, pushed
    toward whichever output is longer by ``length_bias``; the model writes longer."""
    rng = np.random.default_rng(seed)
    len_ref = rng.integers(200, 600, n)
    len_model = len_ref + rng.integers(-100, 500, n)
    delta = (len_ref - len_model) / (len_ref - len_model).std()
    logit = np.log(quality / (1 - quality)) - length_bias * np.tanh(delta)
    wins = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"index": range(n), "output_1": ["r" * k for k in len_ref],
                         "output_2": ["m" * k for k in len_model], "generator_1": "reference",
                         "generator_2": "model", "annotator": "synthetic", "preference": 1.0 + wins})


def test_lc_win_rate_removes_a_known_length_bias():
    unbiased = alpaca_compat.win_rates(synthetic_annotations(0.6, 0.0))
    biased = alpaca_compat.win_rates(synthetic_annotations(0.6, 2.0))
    assert abs(unbiased["win_rate"] - 60) < 5  # no bias: raw is already right
    assert biased["win_rate"] - 60 > 10  # the length bias inflates the raw win rate...
    assert abs(biased["length_controlled_winrate"] - 60) < 5  # ...and LC moves back to the truth
    assert abs(biased["length_controlled_winrate"] - 60) < abs(biased["win_rate"] - 60) / 2


def test_anchor_rows_come_from_the_shipped_leaderboard():
    board = alpaca_compat.anchors().set_index("model")
    for model, rate in ANCHORS.items():
        assert round(board.loc[model, "win_rate"], 2) == rate


def test_model_outputs_load_with_alpaca_evals_reader(tmp_path):
    path = tmp_path / "model_outputs.json"
    eval_outputs.write_model_outputs(path, ["Say hi.", "Name a tea."], ["Hi!", "Green tea."], "mine", "tiny")
    df = alpaca_compat.read_model_outputs(path)
    assert list(df.columns) == ["instruction", "output", "generator", "dataset"] and len(df) == 2
    assert json.loads(path.read_text())[1]["output"] == "Green tea."


def test_official_judge_is_skipped_with_a_reason_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    why = evaluation.official_row(tmp_path / "model_outputs.json", "m", tmp_path, requested=True)
    assert why == "skipped: OPENAI_API_KEY is not set in the environment"
    assert evaluation.official_row(tmp_path / "x.json", "m", tmp_path, requested=False).startswith("not requested")


def test_an_eval_set_with_a_missing_instruction_names_the_line(tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"instruction": "Say hi."}\n{"output": "no instruction here"}\n')
    with pytest.raises(PromptError, match="line 2"):
        load_prompt_source(str(bad), "train")


def test_missing_models_are_named_and_mismatched_instructions_are_clear_errors(tmp_path, capsys):
    """By hand, 04 evaluates the iterations that exist and names the missing ones."""
    values, _ = P.resolve(["params/tiny.yaml"], {"runs_dir": str(tmp_path), "run_name": "partial"})
    stage = stage_for("04_evaluate", values)
    assert [name for name, _ in eval_outputs.models_of_run(stage)] == ["base"]
    assert "no model yet for iteration(s) [1, 2, 3]" in capsys.readouterr().out
    stage.run.policy(2).mkdir(parents=True)
    (stage.run.policy(2) / "config.json").write_text("{}")
    assert [name for name, _ in eval_outputs.models_of_run(stage)] == ["base"]  # not committed by stage 03
    capsys.readouterr()
    write_json({"params_hash": "h", "inputs": {}, "outputs": manifests.record({"policy": stage.run.policy(2)},
                                                                              stage.run.iteration(2))},
               stage.run.manifest("03_dpo_qlora", 2))
    assert [name for name, _ in eval_outputs.models_of_run(stage)] == ["base", "iteration 2"]
    assert "iteration(s) [1, 3]" in capsys.readouterr().out
    ref = pd.DataFrame({"instruction": ["a", "b"], "output": ["x", "y"], "generator": "ref"})
    other = pd.DataFrame({"instruction": ["a", "c"], "output": ["x", "y"], "generator": "m"})
    with pytest.raises(ValueError, match="instructions differ"):
        evaluation.judge_row(None, "judge", other, ref, "m", 4)
    proc = cli("validate", "-f", "params/tiny.yaml", "-p", "base_model", "./no/such/model", check=False)
    assert proc.returncode == 2 and "base_model" in proc.stderr


@pytest.mark.slow
def test_final_iteration_beats_the_base_under_the_runs_judge(loop):
    m = json.loads((loop / "evaluation" / "metrics.json").read_text())["04_evaluate"]
    board = pd.DataFrame(m["leaderboard"]).set_index("model")
    final = board.loc["iteration 2"]
    assert final["win_rate"] - 50 > 2 * final["standard_error"] > 0
    assert board.loc["base", "win_rate"] == 50.0  # the base against itself
    assert "iteration 2 best-of-8" in board.index and final["judge"].startswith("offline: tiny-pairrm")
    assert set(ANCHORS) <= set(board.index) and m["official_judge"]["base"].startswith("not requested")
    for name in ("base", "iteration_1", "iteration_2", "iteration_2_best_of_8"):
        outputs = alpaca_compat.read_model_outputs(loop / "evaluation" / name / "model_outputs.json")
        assert len(outputs) == 96 and outputs["output"].str.strip().ne("").mean() > 0.9
    assert (loop / "evaluation" / "04_leaderboard.png").stat().st_size > 10000
