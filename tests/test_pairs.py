"""Pair selection on a fixed score table, several pairs per prompt downstream, and ``train_on``.

Fast: no models. Each mode's expected (chosen, rejected) indices are derived by hand in the
comments; texts are runs of one letter, so a text's length is its count.
"""
import random
import shutil

import pandas as pd
import pytest
import yaml

from nbutils.dpo import data as dpo_data
from nbutils.length import analysis as L
from nbutils.rerank import dataset as preference_data
from nbutils.rerank import ranking
from nbutils.rerank.pairs import SELECTION_PARAMS, SELECTIONS, select_pairs
from nbutils.run import lineage
from nbutils.run import params as P
from nbutils.run.stage import stage_for

# prompt_id: five (text, score) responses; None = an empty response, which the ranker does not score
TABLE = {
    # distinct scores and lengths: lengths 30 60 10 45 20, scores 1.0 4.0 3.5 0.0 2.0
    "clear": [("a" * 30, 1.0), ("b" * 60, 4.0), ("c" * 10, 3.5), ("d" * 45, 0.0), ("e" * 20, 2.0)],
    # an empty response, two tied best (1: 25 chars, 2: 15), two tied worst (3: 40, 4: 35)
    "ties": [("", None), ("f" * 25, 3.0), ("g" * 15, 3.0), ("h" * 40, 1.0), ("i" * 35, 1.0)],
    # 2 is 0's text plus spaces (identical once stripped), 3 is 1's text exactly (and its score)
    "twins": [("j" * 20, 5.0), ("k" * 30, 3.0), ("j" * 20 + "  ", 1.0), ("k" * 30, 3.0), ("m" * 12, 2.0)],
    # every score equal
    "flat": [("p" * 5, 2.0), ("q" * 6, 2.0), ("r" * 7, 2.0), ("s" * 8, 2.0), ("t" * 9, 2.0)],
    # one scored response (the others empty or blank)
    "alone": [("", None), ("   ", None), ("", None), ("", None), ("n" * 10, 1.0)],
    # three scored responses, all the same text once stripped
    "echo": [("o" * 8, 3.0), ("o" * 8 + " ", 2.0), ("", None), (" " + "o" * 8, 1.0), ("", None)],
}
SKIPPED = ("too_few_scored", "tied", "identical")
PARAMS = {"length_penalty": 1.0, "near_best": 0.1, "max_pairs_per_prompt": 10}

# Hand derivations, prompt by prompt (i: score, length):
#
# clear (0: 1.0, 30; 1: 4.0, 60; 2: 3.5, 10; 3: 0.0, 45; 4: 2.0, 20)
#   best_worst: best 1, worst 3.
#   length_controlled (penalty 1): margin(a, b) = f(a) - f(b), f = score/SD - length/mean length;
#     mean 2.1, SD = sqrt(11.2 / 5) = 1.4967, mean length 33: f = -0.24, 0.85, 2.04, -1.36, 0.73;
#     the largest f(a) - f(b) with score a > score b is 2 over 3 -> (2, 3): the short near-best one.
#   mean_minus_2sd: 2.1 - 2 * 1.4967 = -0.89, nearest 0.0 -> (1, 3).
#   shortest_near_best (0.1): range 4, floor 4 - 0.4 = 3.6: only 1 -> (1, 3);
#     with near_best 0.2: floor 3.2, tier {1 (60 chars), 2 (10)}: the shortest, 2 -> (2, 3).
#   all_pairs: margins (1,3) 4, (2,3) 3.5, (1,0) 3, (2,0) 2.5, (1,4) 2, (4,3) 2, (2,4) 1.5, (0,3) 1,
#     (4,0) 1, (1,2) 0.5 (equal margins: by index): 10 pairs, all within the cap of 10.
# ties (0: empty; 1: 3.0, 25; 2: 3.0, 15; 3: 1.0, 40; 4: 1.0, 35)
#   best_worst: first of the best 1, first of the worst 3 -> (1, 3).
#   length_controlled: z = 1, 1, -1, -1; mean length 28.75; f = 0.13, 0.48, -2.39, -2.22 -> (2, 3).
#   mean_minus_2sd: mean 2, SD 1, target 0: 3 and 4 equally near, equal scores, first -> (1, 3).
#   shortest_near_best: floor 3 - 0.2 = 2.8, tier {1, 2}, shortest 2; worst: first of equals 3 -> (2, 3).
#   all_pairs: (1,3) (1,4) (2,3) (2,4), each margin 2, by index.
# twins (0: 5.0, j20; 1: 3.0, k30; 2: 1.0, j20 + 2 spaces; 3: 3.0, k30; 4: 2.0, m12)
#   best_worst, mean_minus_2sd (target below the lowest score: Samuelson, see below),
#   shortest_near_best (tier {0}) and length_controlled (f = 2.89, 0.95, -0.21, 0.95, 0.98) all
#   give (0, 2): the same text, skipped as identical.
#   all_pairs: by margin (0,2) 4, (0,4) 3, (0,1) (0,3) (1,2) (3,2) 2, (1,4) (3,4) (4,2) 1; (0,2) is one
#   text twice, (0,3) (3,2) (3,4) repeat the texts of (0,1) (1,2) (1,4): (0,4) (0,1) (1,2) (1,4) (4,2).
# flat: every mode ties (all_pairs: no pair the ranker orders). alone: too few scored.
# echo: every pair the ranker orders is one text twice: identical.
EXPECTED = {
    "best_worst": {"clear": [(1, 3)], "ties": [(1, 3)]},
    "length_controlled": {"clear": [(2, 3)], "ties": [(2, 3)]},
    "mean_minus_2sd": {"clear": [(1, 3)], "ties": [(1, 3)]},
    "shortest_near_best": {"clear": [(1, 3)], "ties": [(2, 3)]},
    "all_pairs": {"clear": [(1, 3), (2, 3), (1, 0), (2, 0), (1, 4), (4, 3), (2, 4), (0, 3), (4, 0), (1, 2)],
                  "ties": [(1, 3), (1, 4), (2, 3), (2, 4)],
                  "twins": [(0, 4), (0, 1), (1, 2), (1, 4), (4, 2)]},
    # the seeded draws (seed 7), pinned: a best answer vs one of the others (twins: 1, not its own text 2)
    "best_random": {"clear": [(1, 3)], "ties": [(1, 3)], "twins": [(0, 1)]},
}
# prompts skipped, in SKIPPED's order: alone; flat; twins and echo (all_pairs and best_random: echo alone)
EXPECTED_SKIPS = {m: (1, 1, 2) for m in EXPECTED} | {"all_pairs": (1, 1, 1), "best_random": (1, 1, 1)}


def rows(table=TABLE):
    return [{"prompt_id": pid, "prompt": f"Question {pid}?", "all_generated_responses": [t for t, _ in answers],
             "all_rm_scores": [s for _, s in answers]} for pid, answers in table.items()]


def picked(kept) -> dict:
    out = {}
    for r in kept:
        out.setdefault(r["prompt_id"], []).append((r["chosen_index"], r["rejected_index"]))
    return out


def test_the_table_is_what_the_comments_say():
    assert [len(t) for t, _ in TABLE["clear"]] == [30, 60, 10, 45, 20]
    assert [len(t) for t, _ in TABLE["ties"]] == [0, 25, 15, 40, 35]
    assert set(EXPECTED) == set(SELECTIONS)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_selection_picks_the_pairs_derived_by_hand(method):
    kept, skipped = select_pairs(rows(), method, 7, PARAMS)
    assert picked(kept) == EXPECTED[method]
    assert tuple(skipped[f"prompts_skipped_{k}"] for k in SKIPPED) == EXPECTED_SKIPS[method]
    for r in kept:  # what every kept pair is: ordered by the ranker, two texts, none empty
        scores, texts = r["all_rm_scores"], r["all_generated_responses"]
        assert scores[r["chosen_index"]] > scores[r["rejected_index"]]
        assert texts[r["chosen_index"]].strip() != texts[r["rejected_index"]].strip()
        assert r["prompt"] == f"Question {r['prompt_id']}?"


def test_best_random_chooses_a_best_answer_and_draws_the_rest_by_seed():
    draws = set()
    for seed in range(20):
        kept, _ = select_pairs(rows(), "best_random", seed, PARAMS)
        for r in kept:
            assert r["all_rm_scores"][r["chosen_index"]] == max(s for s in r["all_rm_scores"] if s is not None)
        draws.add(tuple(r["rejected_index"] for r in kept))
    assert len(draws) > 1
    kept, skipped = select_pairs(rows(), "best_random", 0, PARAMS)  # ties: draws 2, the other best: a tie
    assert "ties" not in picked(kept) and skipped["prompts_skipped_tied"] == 2


def test_near_best_widens_the_tier_to_shorter_answers():
    widened = select_pairs(rows(), "shortest_near_best", 7, {**PARAMS, "near_best": 0.2})[0]
    assert picked(widened)["clear"] == [(2, 3)]  # 3.5 is within 0.2 x 4 of 4.0, and 10 chars against 60
    everything = select_pairs(rows(), "shortest_near_best", 7, {**PARAMS, "near_best": 5.0})[0]
    assert picked(everything)["clear"] == [(2, 3)]  # the tier never takes in the worst answer itself
    assert picked(select_pairs(rows(), "shortest_near_best", 7, {**PARAMS, "near_best": 0.0})[0]) == \
        {"clear": [(1, 3)], "ties": [(2, 3)]}  # 0: best vs worst, the shortest of equal bests


def test_all_pairs_keeps_the_largest_margins_up_to_the_cap():
    kept, skipped = select_pairs(rows(), "all_pairs", 7, {**PARAMS, "max_pairs_per_prompt": 3})
    assert picked(kept) == {"clear": [(1, 3), (2, 3), (1, 0)], "ties": [(1, 3), (1, 4), (2, 3)],
                            "twins": [(0, 4), (0, 1), (1, 2)]}
    assert skipped == select_pairs(rows(), "all_pairs", 7, PARAMS)[1]  # the cap skips no prompt
    one = select_pairs(rows(), "all_pairs", 7, {**PARAMS, "max_pairs_per_prompt": 1})[0]
    assert picked(one) == {"clear": [(1, 3)], "ties": [(1, 3)], "twins": [(0, 4)]}


def test_mean_minus_2sd_is_best_worst_up_to_five_answers_and_differs_with_more():
    """Samuelson's inequality: every score lies within SD x sqrt(K - 1) of the mean, so with K <= 5
    answers mean - 2 SD is at or below the lowest score and the rejected one is the worst."""
    rng = random.Random(0)
    many = [{"prompt_id": f"r{i}", "all_generated_responses": [f"answer {j}" for j in range(5)],
             "all_rm_scores": [rng.gauss(0, 1) for _ in range(5)]} for i in range(300)]
    assert select_pairs(many, "mean_minus_2sd", 0) == select_pairs(many, "best_worst", 0)
    # 11 scores 0, 1, 5 x 8, 6: mean 47/11 = 4.273, SD sqrt(237/11 - mean^2) = 1.814, target 0.645:
    # 1 (0.355 away) is nearer than 0 (0.645 away)
    scores = [0.0, 1.0] + [5.0] * 8 + [6.0]
    # 12 scores 4, 0, 6, 6, 7 x 8: mean 6, SD 2 (both exact in floats), target 2: 4 and 0 are equally
    # near; the lower score, 0 (index 1, not the first), is rejected
    tie = [4.0, 0.0, 6.0, 6.0] + [7.0] * 8
    wide = [{"prompt_id": pid, "all_generated_responses": [f"answer {j}" for j in range(len(s))], "all_rm_scores": s}
            for pid, s in (("eleven", scores), ("twelve", tie))]
    assert picked(select_pairs(wide, "mean_minus_2sd", 0)[0]) == {"eleven": [(10, 1)], "twelve": [(4, 1)]}
    assert picked(select_pairs(wide, "best_worst", 0)[0])["eleven"] == [(10, 0)]


def test_selection_params_are_base_yamls_and_refused_with_another_selection():
    base = yaml.safe_load(P.BASE_PRESET.read_text())
    assert {k: base[k] for d in SELECTION_PARAMS.values() for k in d} == \
        {k: v for d in SELECTION_PARAMS.values() for k, v in d.items()}
    for key, value, method in [("near_best", 0.3, "shortest_near_best"), ("max_pairs_per_prompt", 4, "all_pairs"),
                               ("length_penalty", 1.0, "length_controlled")]:
        with pytest.raises(P.ParamsError, match=f"{key}: .* acts only with pair_selection: {method}"):
            P.resolve(["recipes/tiny.yaml"], {key: value})
        P.resolve(["recipes/tiny.yaml"], {key: value, "pair_selection": method})
    for key, value, words in [("near_best", -0.1, "at least 0"), ("max_pairs_per_prompt", 0, "at least 1"),
                              ("train_on", "every_iteration", "this_iteration, all_iterations"),
                              ("pair_selection", "worst_best", "mean_minus_2sd, shortest_near_best, all_pairs")]:
        with pytest.raises(P.ParamsError, match=f"{key}: must be .*{words}"):
            P.resolve(["recipes/tiny.yaml"], {key: value})


def test_several_pairs_per_prompt_split_by_prompt():
    kept, _ = select_pairs(rows(), "all_pairs", 7, PARAMS)
    df = preference_data.snorkel_rows(kept)
    assert len(df) == 19 and df["prompt_id"].nunique() == 3
    for seed in range(10):
        train, test = preference_data.split(df, 0.34, seed)
        assert len(train) + len(test) == 19 and test["prompt_id"].nunique() == 1  # round(3 x 0.34) prompts
        assert not set(train["prompt_id"]) & set(test["prompt_id"])
        for part in (train, test):  # every prompt's pairs stay together, in their order
            for pid in part["prompt_id"].unique():
                pd.testing.assert_frame_equal(part[part["prompt_id"] == pid].reset_index(drop=True),
                                              df[df["prompt_id"] == pid].reset_index(drop=True))


def test_one_pair_per_prompt_splits_as_it_always_did():
    df = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(40)], "x": range(40)})
    order = list(range(40))
    random.Random(42).shuffle(order)  # the split before prompts could have several rows
    old_test = sorted(order[:round(40 * 0.05)])
    train, test = preference_data.split(df, 0.05, 42)
    assert list(test["x"]) == old_test and list(train["x"]) == [i for i in range(40) if i not in old_test]


def table_score(prompt: str, response: str) -> float:
    """The table as a ``module:function`` ranker (each response text has one score in it)."""
    return {t: s for answers in TABLE.values() for t, s in answers if s is not None}[response]


def test_stage_02_writes_every_pair_and_counts_prompts(runs_dir):
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(runs_dir), "run_name": "all-pairs",
                                                 "ranker": "tests.test_pairs:table_score",
                                                 "pair_selection": "all_pairs", "max_pairs_per_prompt": 4,
                                                 "test_fraction": 0.34})
    st = stage_for("02_rerank", values)
    st.iter_dir.mkdir(parents=True)
    pd.DataFrame(rows())[["prompt_id", "prompt", "all_generated_responses"]].to_parquet(st.run.generations(1))
    splits, stats = ranking.rerank(st, st.run.generations(1), st.run.preference_data(1))
    assert (stats["prompts"], stats["paired_prompts"], stats["pairs"]) == (6, 3, 4 + 4 + 4)
    assert stats["train_pairs"] + stats["test_pairs"] == 12 and stats["test_pairs"] == 4  # one prompt's pairs
    assert stats["max_pairs_per_prompt"] == 4 and stats["pair_selection"] == "all_pairs"
    assert (stats["prompts_skipped_too_few_scored"], stats["prompts_skipped_tied"],
            stats["prompts_skipped_identical"]) == (1, 1, 1)
    train, test = (preference_data.load_split(st.run.preference_data(1), f"{s}_iteration_1").to_pandas()
                   for s in ("train", "test"))
    assert not set(train["prompt_id"]) & set(test["prompt_id"])
    assert (train["score_chosen"] > train["score_rejected"]).all()
    # stage 05 reads a row per pair, and each prompt's responses once
    prs = L.pairs(st.run.path, [1])
    assert len(prs) == 12 and L.pair_table(prs).loc[1, "pairs"] == 12
    scored = L.scored(prs)  # clear: 5 scored responses, ties: 4, twins: 5 (not once per pair)
    assert scored.groupby("prompt_id").size().to_dict() == {"clear": 5, "ties": 4, "twins": 5}


class CharTokenizer:
    """One token per character of the chat (stage 03's data checks count tokens, nothing more)."""

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, return_dict=False):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return list(range(len(text) + (len("<assistant>") if add_generation_prompt else 0)))


def two_iterations(runs_dir, name):
    """Stage 02's pairs of iterations 1 and 2 (the dataset writer's, committed with manifests),
    iteration 2's stage 03 with ``train_on: all_iterations``, and the run's params."""
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(runs_dir), "run_name": name})
    for n, pids in ((1, ["clear", "ties", "flat"]), (2, ["twins", "clear"])):
        write_pairs(values, n, {f"it{n}-{p}": TABLE[p] for p in pids})
    return stage_for("03_dpo_qlora", {**values, "iteration": 2, "train_on": "all_iterations"}), values


def write_pairs(values, n, table, method="all_pairs"):
    st = stage_for("02_rerank", {**values, "iteration": n})
    kept, _ = select_pairs(rows(table), method, 0, PARAMS)
    train, test = preference_data.split(preference_data.snorkel_rows(kept), 0.5, n)
    preference_data.write_dataset({f"train_iteration_{n}": train, f"test_iteration_{n}": test},
                                  st.run.preference_data(n), "")
    st.finish(outputs={"preference_data": st.run.preference_data(n)}, metrics={})
    return train, test


def test_train_on_all_iterations_reads_the_train_and_test_splits_of_1_to_n(runs_dir):
    stage, _ = two_iterations(runs_dir, "two")
    folders = stage.run.training_pairs(2, stage["train_on"])
    assert folders == {1: stage.run.preference_data(1), 2: stage.run.preference_data(2)}
    assert stage.run.training_pairs(2) == {2: stage.run.preference_data(2)}
    train, evaluation, stats = dpo_data.load_pairs(folders, CharTokenizer(), max_length=1024)
    parts = {(n, s): preference_data.load_split(folders[n], f"{s}_iteration_{n}").to_pandas()
             for n in (1, 2) for s in ("train", "test")}
    assert len(train) == len(parts[1, "train"]) + len(parts[2, "train"]) == stats["train_pairs"]
    assert len(evaluation) == len(parts[1, "test"]) + len(parts[2, "test"]) == stats["eval_pairs"]
    assert stats["pairs_of_iterations"] == [1, 2]
    prompts = {r["prompt"][0]["content"] for r in train}
    assert prompts == {f"Question {p}?" for part in (parts[1, "train"], parts[2, "train"]) for p in part["prompt_id"]}
    assert train[0]["chosen"] == parts[1, "train"]["chosen"][0][-1:].tolist()  # iteration 1's first
    only, _, _ = dpo_data.load_pairs(stage.run.training_pairs(2), CharTokenizer(), max_length=1024)
    assert len(only) == len(parts[2, "train"])
    assert dpo_data.check_prompts(train, 3) == list(dict.fromkeys(r["prompt"][0]["content"] for r in train))[:3]


def test_stage_03_of_iteration_2_depends_on_iteration_1s_pairs(runs_dir):
    stage, values = two_iterations(runs_dir, "lineage")
    plain = stage_for("03_dpo_qlora", {**stage.params, "train_on": "this_iteration"})
    assert {"iter_1/preference_data", "iter_2/preference_data"} <= lineage.inputs(stage).keys()
    assert "iter_1/preference_data" not in lineage.inputs(plain)
    policy = stage.run.policy(2)
    policy.mkdir(parents=True)
    (policy / "config.json").write_text("{}")
    stage.finish(outputs={"policy": policy}, metrics={})
    assert stage.why_not_done() is None
    before = lineage.inputs(stage)
    write_pairs(values, 1, {"it1-clear": TABLE["clear"]}, method="best_worst")  # other pairs for iteration 1
    after = lineage.inputs(stage)
    assert after["iter_1/preference_data"] != before["iter_1/preference_data"]
    assert after["iter_2/preference_data"] == before["iter_2/preference_data"]
    assert stage.why_not_done() == "inputs changed (iter_1/preference_data)"
    assert lineage.inputs(plain)["iter_2/preference_data"] == before["iter_2/preference_data"]


def test_a_missing_earlier_iteration_says_which_stage_to_run(runs_dir):
    stage, _ = two_iterations(runs_dir, "gap")
    folders = stage.run.training_pairs(3, "all_iterations")
    with pytest.raises(FileNotFoundError, match=r"run stage 02_rerank for iteration 3 first .*--iterations 3\)"
                                                r"; train_on: all_iterations trains iteration 3 on the pairs of "
                                                r"iterations 1\.\.3"):
        dpo_data.require_pairs(folders)
    shutil.rmtree(stage.run.preference_data(1))
    with pytest.raises(FileNotFoundError, match=r"iter_1/preference_data: run stage 02_rerank for iteration 1"):
        dpo_data.load_pairs(stage.run.training_pairs(2, "all_iterations"), CharTokenizer(), 1024)
    assert len(dpo_data.load_pairs(stage.run.training_pairs(2), CharTokenizer(), 1024)[0])  # this_iteration: fine
