"""alpaca_eval 0.6.6 offline: its own win-rate and length-controlled (LC) code,
its own output reader, and the leaderboard it ships.

LC win rate fits a GLM of the judge's preference on the length difference and
predicts the preference at equal length. Two of alpaca_eval's GLMs are used:

* ``length_controlled_v1``, the leaderboard's: it adds a per-instruction
  difficulty and regularises toward annotations of two "gamed" (verbose, concise)
  GPT-4-turbo baselines, both from the hub file ``df_gamed.csv`` of
  ``tatsu-lab/alpaca_eval``, both from GPT-4-turbo's judgments and AlpacaEval's
  805 instructions. Only for AlpacaEval (the annotations' ``index`` is the
  instruction's position in it).
* ``length_controlled_minimal``: length term + intercept, no regularisation; for any
  eval set and judge. The ``df_gamed.csv`` download alpaca_eval makes even for it
  is served a local stand-in whose rows it does not read.

alpaca_eval calls ``hf_hub_download`` on every fit; the workbook downloads the file once
(its own hub code, with its errors) and serves alpaca_eval that copy.
"""
from __future__ import annotations

import functools
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from nbutils.logs import c_stderr_silenced

MINIMAL, V1 = "length_controlled_minimal", "length_controlled_v1"
LEADERBOARD = "leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"  # the leaderboard's judge: GPT-4-turbo, logprob-weighted


@contextmanager
def gamed_csv_at(path: Path):
    """Serve glm_winrate's own ``hf_hub_download`` of ``df_gamed.csv`` the file at ``path``
    (it would ask the hub on every fit)."""
    from alpaca_eval.metrics import glm_winrate
    original = glm_winrate.hf_hub_download
    glm_winrate.hf_hub_download = lambda *a, **k: str(path)
    try:
        yield
    finally:
        glm_winrate.hf_hub_download = original


@contextmanager
def local_gamed_csv(n_instructions: int):
    """A stand-in ``df_gamed.csv`` (zero difficulty for every instruction index), for the
    minimal GLM, which does not read its rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "df_gamed.csv"
        pd.DataFrame({"model": "none", "index": range(n_instructions), "instruction_difficulty": 0.0,
                      "preference": 1.5, "not_gamed_baseline": False}).to_csv(path, index=False)
        with gamed_csv_at(path):
            yield


@functools.cache
def real_gamed_csv() -> Path:
    """The hub's ``df_gamed.csv`` (``tatsu-lab/alpaca_eval``), downloaded once to the hub cache;
    errors say what to do (``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` apply)."""
    from nbutils.sources.hub import ALPACA_EVAL, ALPACA_EVAL_FILES, dataset_file
    return dataset_file(ALPACA_EVAL, ALPACA_EVAL_FILES["gamed"])


def win_rates(annotations: pd.DataFrame, glm: str = MINIMAL, weights_dir: Path | None = None) -> dict:
    """alpaca_eval's win rate, standard error and LC win rate (GLM ``glm``) for one model's
    annotations (columns ``index``, ``output_1`` reference, ``output_2`` model, ``generator_1``,
    ``generator_2``, ``preference`` in [1, 2], 2 = the model wins). ``V1`` reads the real
    ``df_gamed.csv``. Under 5 annotations (the GLM's 5-fold cross-validation) LC is NaN. With
    ``weights_dir``, alpaca_eval also writes the fitted GLM's weights there (:func:`glm_fit` reads them)."""
    from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate, get_winrate
    if len(annotations) < 5:
        rates = {k: float(v) for k, v in get_winrate(annotations).items()}
        return rates | {"length_controlled_winrate": float("nan"), "lc_standard_error": float("nan")}
    gamed = gamed_csv_at(real_gamed_csv()) if glm == V1 else local_gamed_csv(int(annotations["index"].max()) + 1)
    with gamed, warnings.catch_warnings(), c_stderr_silenced():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9 on alpaca_eval's LogisticRegressionCV
        # liblinear's iteration cap, hit on tiny or one-sided preference sets (alpaca_eval sets the cap; the
        # fit it returns is what the leaderboard's code returns too): not something a user can act on
        from sklearn.exceptions import ConvergenceWarning
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = get_length_controlled_winrate(annotations.copy(), glm_name=glm, save_weights_dir=weights_dir,
                                            is_warn_extreme_changes=False)
    return {k: float(v) for k, v in out.items()}


def glm_fit(annotations: pd.DataFrame, glm: str = MINIMAL) -> dict:
    """:func:`win_rates` and the GLM's fitted weights, as alpaca_eval saves them (``weights``: feature ->
    coefficient; the minimal GLM's are ``np.tanh(std_delta_len)`` and the intercept
    ``not_gamed_baseline.astype(float)``), and the length difference's scale: its feature is
    (reference length − model length) / ``length_scale``, in characters."""
    with tempfile.TemporaryDirectory() as tmp:
        rates = win_rates(annotations, glm, Path(tmp))
        files = list(Path(tmp).glob(f"{glm}/*.csv"))
        weights = pd.read_csv(files[0], index_col=0).iloc[-1].to_dict() if files else {}
    delta = annotations["output_1"].str.len() - annotations["output_2"].str.len()
    return {**rates, "weights": weights, "length_scale": float(delta.std())}


def read_model_outputs(path) -> pd.DataFrame:
    """A ``model_outputs.json`` read by alpaca_eval's own reader."""
    from alpaca_eval.utils import load_or_convert_to_dataframe
    return load_or_convert_to_dataframe(Path(path))


@functools.cache
def leaderboard() -> pd.DataFrame:
    """The AlpacaEval 2.0 leaderboard CSV alpaca_eval ships, indexed by model name."""
    import alpaca_eval
    return pd.read_csv(Path(alpaca_eval.__file__).parent / LEADERBOARD, index_col=0)


def leaderboard_rows(models: list[str]) -> pd.DataFrame:
    """The AlpacaEval 2.0 leaderboard's rows of ``models`` (its LC is ``length_controlled_v1``);
    a model it lacks is named."""
    import alpaca_eval
    board = leaderboard()
    missing = [m for m in models if m not in board.index]
    if missing:
        raise KeyError(f"{missing}: not on alpaca_eval {alpaca_eval.__version__}'s AlpacaEval 2.0 leaderboard "
                       f"({LEADERBOARD}); use the names in its first column")
    rows = board.loc[models, ["win_rate", "standard_error", "length_controlled_winrate", "avg_length", "n_total"]]
    return rows.rename(columns={"length_controlled_winrate": "lc_v1", "n_total": "n"}).rename_axis("model").reset_index()


def official_evaluate(model_outputs: Path, out_dir: Path) -> dict:
    """AlpacaEval 2.0 with its GPT-4-turbo weighted annotator (needs OPENAI_API_KEY and the hub)."""
    from alpaca_eval import evaluate
    board, _ = evaluate(model_outputs=str(model_outputs), annotators_config=ANNOTATOR,
                        output_path=str(out_dir), is_return_instead_of_print=True)
    row = board.iloc[0]
    return {"win_rate": float(row["win_rate"]), "standard_error": float(row["standard_error"]),
            "lc_v1": float(row["length_controlled_winrate"]), "avg_length": float(row["avg_length"])}
