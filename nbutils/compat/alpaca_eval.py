"""alpaca_eval 0.6.6 offline: its own win-rate and length-controlled (LC) code,
its own output reader, and the leaderboard it ships.

LC win rate fits a GLM of the judge's preference on the length difference and
predicts the preference at equal length. alpaca_eval's default GLM
(``length_controlled_v1``) also uses a per-instruction difficulty and
regularises toward annotations of "gamed" models, both downloaded from the hub
(``df_gamed.csv``) and both meaningful only for AlpacaEval's 805 instructions
and its GPT-4-turbo judge. Offline, and for any eval set or judge, the workbook
uses ``length_controlled_minimal`` (length term + intercept, no regularisation);
the download it would still make is served by a local stand-in whose rows it
does not use.
"""
from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from nbutils.logs import c_stderr_silenced

GLM = "length_controlled_minimal"
ANCHORS = ["Mistral-7B-Instruct-v0.2", "Snorkel-Mistral-PairRM-DPO", "Snorkel-Mistral-PairRM-DPO-best-of-16",
           "SPPO-Mistral7B-PairRM"]
LEADERBOARD = "leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"


@contextmanager
def local_gamed_csv(n_instructions: int):
    """Serve glm_winrate's ``hf_hub_download`` a stand-in ``df_gamed.csv`` (zero
    difficulty for every instruction index; the minimal GLM does not read it)."""
    from alpaca_eval.metrics import glm_winrate
    original = glm_winrate.hf_hub_download
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "df_gamed.csv"
        pd.DataFrame({"model": "none", "index": range(n_instructions), "instruction_difficulty": 0.0,
                      "preference": 1.5, "not_gamed_baseline": False}).to_csv(path, index=False)
        glm_winrate.hf_hub_download = lambda *a, **k: str(path)
        try:
            yield
        finally:
            glm_winrate.hf_hub_download = original


def win_rates(annotations: pd.DataFrame) -> dict:
    """alpaca_eval's win rate, standard error and LC win rate for one model's annotations
    (columns ``index``, ``output_1`` reference, ``output_2`` model, ``generator_1``,
    ``generator_2``, ``preference`` in [1, 2], 2 = the model wins)."""
    from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate
    with local_gamed_csv(int(annotations["index"].max()) + 1), warnings.catch_warnings(), c_stderr_silenced():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9 on alpaca_eval's LogisticRegressionCV
        out = get_length_controlled_winrate(annotations.copy(), glm_name=GLM, save_weights_dir=None,
                                            is_warn_extreme_changes=False)
    return {k: float(v) for k, v in out.items()}


def read_model_outputs(path) -> pd.DataFrame:
    """A ``model_outputs.json`` read by alpaca_eval's own reader."""
    from alpaca_eval.utils import load_or_convert_to_dataframe
    return load_or_convert_to_dataframe(Path(path))


def anchors() -> pd.DataFrame:
    """The leaderboard rows of the blog's models, from the CSV alpaca_eval ships."""
    import alpaca_eval
    board = pd.read_csv(Path(alpaca_eval.__file__).parent / LEADERBOARD, index_col=0)
    rows = board.loc[ANCHORS, ["win_rate", "standard_error", "length_controlled_winrate", "avg_length"]]
    return rows.rename(columns={"length_controlled_winrate": "lc_win_rate"}).rename_axis("model").reset_index()


def official_evaluate(model_outputs: Path, out_dir: Path) -> dict:
    """AlpacaEval 2.0 with its GPT-4-turbo weighted annotator (needs OPENAI_API_KEY and the hub)."""
    from alpaca_eval import evaluate
    board, _ = evaluate(model_outputs=str(model_outputs), annotators_config="weighted_alpaca_eval_gpt4_turbo",
                        output_path=str(out_dir), is_return_instead_of_print=True)
    row = board.iloc[0]
    return {"win_rate": float(row["win_rate"]), "standard_error": float(row["standard_error"]),
            "lc_win_rate": float(row["length_controlled_winrate"]), "avg_length": float(row["avg_length"])}
