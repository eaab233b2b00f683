"""Stage 02: real llm-blender on the tiny PairRM, pair selection, the Snorkel-schema dataset."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from nbutils.store.files import REPO_ROOT
from nbutils.run import params as P
from nbutils.rerank import dataset as preference_data
from nbutils.rerank import rankers
from nbutils.rerank import ranking as rerank
from nbutils.run.stage import stage_for
from tests.conftest import cli, metrics, params_args

pytestmark = pytest.mark.slow
PROMPT = "Give me some tips about coffee."
ANSWERS = ["Sure!",
           "Many people enjoy coffee every day. Coffee is a wonderful topic to explore.",
           "It depends on many things.",
           "1. Start small with coffee and build simple habits. 2. Books and videos about coffee are a great start.",
           "Chess is a wonderful topic to explore."]


@pytest.fixture(scope="module")
def pairrm():
    return rankers.load_ranker("tiny-pairrm", device="cpu")


def stage(runs_dir, run_name, **overrides):
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(runs_dir), "run_name": run_name, **overrides})
    return stage_for("02_rerank", values)


def write_generations(st, rows):
    st.iter_dir.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([{"prompt_id": f"p{i}", "prompt": PROMPT, "all_generated_responses": r}
                       for i, r in enumerate(rows)])
    df.to_parquet(st.iter_dir / "generations.parquet")
    return st.iter_dir / "generations.parquet"


def test_tiny_pairrm_prefers_what_it_was_trained_to(pairrm):
    scores = pairrm.score([PROMPT], [ANSWERS], 8)[0]
    assert scores.argmax() == 3 and scores[3] > scores[0] and scores[1] > scores[2]


def test_permuting_candidates_permutes_scores(pairrm):
    scores = pairrm.score([PROMPT], [ANSWERS], 8)[0]
    perm = [4, 2, 0, 3, 1]
    permuted = pairrm.score([PROMPT], [[ANSWERS[i] for i in perm]], 8)[0]
    np.testing.assert_allclose(permuted, scores[perm], atol=1e-5)


def test_swapping_a_compared_pair_flips_the_preference(pairrm):
    blender = pairrm.blender
    a, b = [ANSWERS[3], ANSWERS[0]], [ANSWERS[0], ANSWERS[2]]
    forward = blender.compare([PROMPT] * 2, a, b, return_logits=True)
    backward = blender.compare([PROMPT] * 2, b, a, return_logits=True)
    assert (np.sign(forward) == -np.sign(backward)).all() and forward[0] > 0
    np.testing.assert_allclose(forward, -backward, atol=1e-5)
    # one direction only ("[A,B]") has position bias, but not enough to flip a clear preference
    one_way = blender.compare([PROMPT], a[:1], b[:1], return_logits=True, mode="[A,B]")
    other_way = blender.compare([PROMPT], b[:1], a[:1], return_logits=True, mode="[A,B]")
    assert one_way[0] > 0 > other_way[0]


def test_empty_unequal_tied_and_identical_responses_are_handled(runs_dir):
    st = stage(runs_dir, "awkward", ranker="tests.reward_functions:by_length", test_fraction=0.0)
    path = write_generations(st, [
        ["a good answer", "", "  ", "the best answer here", "ok"],  # 2 empty: never picked
        ["", "", "", "", "only one"],                                 # too few scored
        ["four", "responses", "not", "five!"],                        # another count: still ranked
        ["same", "size", "four", "word"],                             # tied best and worst
        ["Coffee is fun.", "Coffee is fun.   "],                     # identical once stripped
    ])
    splits, stats = rerank.rerank(st, path, st.iter_dir / "preference_data")
    train = splits["train_iteration_1"]
    assert list(train["prompt_id"]) == ["p0", "p2"]
    assert train["chosen"][0][-1]["content"] == "the best answer here" and train["rejected"][0][-1]["content"] == "ok"
    assert train["all_rm_scores"][0][1] is None and train["all_rm_scores"][0][2] is None
    assert stats["empty_responses_not_scored"] == 6 and stats["prompts_with_other_response_counts"] == 3
    assert (stats["prompts_skipped_too_few_scored"], stats["prompts_skipped_tied"],
            stats["prompts_skipped_identical"]) == (1, 1, 1)
    # PairRM ranks prompts with different numbers of responses too (grouped by count)
    pst = stage(runs_dir, "awkward-pairrm", test_fraction=0.0)
    splits, stats = rerank.rerank(pst, write_generations(pst, [ANSWERS, ANSWERS[:3], ["", *ANSWERS[1:]]]),
                                  pst.iter_dir / "preference_data")
    assert stats["pairs"] == 3 and all(len(s) in (3, 5) for s in splits["train_iteration_1"]["all_rm_scores"])


def test_a_reward_function_that_raises_names_the_response(runs_dir):
    st = stage(runs_dir, "raises", ranker="tests.reward_functions:unavailable")
    path = write_generations(st, [ANSWERS])
    with pytest.raises(rankers.RankerError, match="raised on response 0.*judge service unavailable"):
        rerank.rerank(st, path, st.iter_dir / "preference_data")
    with pytest.raises(rankers.RankerError, match="returned nan"):
        rankers.load_ranker("tests.reward_functions:not_a_number").score([PROMPT], [ANSWERS], 4)
    with pytest.raises(rankers.RankerError, match="cannot import"):
        rankers.load_ranker("tests.reward_functions:no_such_function")


def test_missing_generations_say_which_stage_to_run(runs_dir):
    proc = cli("run", "-f", "recipes/tiny.yaml", "--stages", "02_rerank", "--iterations", "1",
               *params_args(runs_dir=runs_dir, run_name="nothing"), check=False)
    assert proc.returncode == 1 and "01_generate" in proc.stdout + proc.stderr


def test_bad_ranker_params_are_refused_before_anything_loads(runs_dir):
    for key, value, words in [("ranker", "./no/such/ranker", "no ranker"),
                              ("pair_selection", "best_wrost", "best_worst"),
                              ("push_to_hub", "not a repo", "hub repo"),
                              ("test_fraction", "1.0", "[0, 1)")]:
        proc = cli("validate", "-f", "recipes/tiny.yaml", "-p", key, value, check=False)
        assert proc.returncode == 2 and key in proc.stderr and words in proc.stderr, proc.stderr


def test_a_sequence_classification_reward_model_scores_each_response(tmp_path):
    from nbutils.tiny.ranker import tiny_ranker_path
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(tiny_ranker_path().parent / "backbone")
    for labels in (1, 2):
        config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_labels=labels)
        DebertaV2ForSequenceClassification(config).save_pretrained(tmp_path / f"rm{labels}")
        tokenizer.save_pretrained(tmp_path / f"rm{labels}")
    rm = rankers.load_ranker(str(tmp_path / "rm1"), device="cpu")
    assert isinstance(rm, rankers.RewardModelRanker)
    scores = rm.score([PROMPT, PROMPT], [ANSWERS, ANSWERS[:2]], 3)
    assert [len(s) for s in scores] == [5, 2] and np.isfinite(np.concatenate(scores)).all()
    np.testing.assert_allclose(scores[1], scores[0][:2], atol=1e-5)
    with pytest.raises(rankers.RankerError, match="2 outputs"):
        rankers.load_ranker(str(tmp_path / "rm2"), device="cpu")


def test_dataset_card_keeps_every_split():
    names = preference_data.split_names(["README.md", "data/train_iteration_1-00000-of-00001.parquet",
                                         "data/test_iteration_1-00000-of-00001.parquet",
                                         "data/train_iteration_2-00000-of-00001.parquet"])
    assert names == ["test_iteration_1", "train_iteration_1", "train_iteration_2"]
    assert "split: train_iteration_2" in preference_data.card(names, "")


@pytest.fixture(scope="module")
def tiny_run(runs_dir):
    cli("run", "-f", "recipes/tiny.yaml", "--iterations", "1",
        *params_args(runs_dir=runs_dir, run_name="rerank", prompts_per_iteration=40, shard_size=8))
    return runs_dir / "rerank"


def test_two_runs_datasets_never_load_each_others_rows(tmp_path):
    """``datasets.load_dataset(<folder>)`` caches local folders by name; load_split does not."""
    for run, n in (("a", 3), ("b", 5)):
        rows = pd.DataFrame({c: [f"{run}{i}" for i in range(n)] for c in ("prompt_id", "prompt")})
        preference_data.write_dataset({"train_iteration_1": rows}, tmp_path / run / "preference_data", "")
    assert [len(preference_data.load_split(tmp_path / r / "preference_data", "train_iteration_1"))
            for r in "ab"] == [3, 5]
    with pytest.raises(FileNotFoundError, match="train_iteration_1"):
        preference_data.load_split(tmp_path / "a" / "preference_data", "train_iteration_2")


def test_stage_writes_a_snorkel_schema_dataset_trl_can_use(tiny_run):
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational
    from nbutils.generate.policies import base_model_path

    data = {s: preference_data.load_split(tiny_run / "iter_1" / "preference_data", s)
            for s in ("train_iteration_1", "test_iteration_1")}
    assert data["train_iteration_1"].column_names == preference_data.COLUMNS
    assert len(data["train_iteration_1"]) + len(data["test_iteration_1"]) == 40
    assert len(data["test_iteration_1"]) == 2  # round(40 * 0.05)
    for row in data["train_iteration_1"]:
        assert row["chosen"][0] == {"role": "user", "content": row["prompt"]} == row["rejected"][0]
        assert row["chosen"][1]["role"] == "assistant" and row["messages"] == row["chosen"]
        assert row["score_chosen"] > row["score_rejected"] == min(row["all_rm_scores"])
        assert row["chosen"][1]["content"] in row["all_generated_responses"]
    example = preference_data.for_dpo(data["train_iteration_1"])[0]
    assert is_conversational(example) and set(example) == {"prompt", "chosen", "rejected"}
    text = apply_chat_template(example, AutoTokenizer.from_pretrained(base_model_path("tiny-mistral")))
    assert text["prompt"].startswith("<s>[INST]") and text["chosen"].endswith("</s>")
    m = metrics(tiny_run)["02_rerank"]
    assert m["pairs"] == 40 and m["ranker"] == "tiny-pairrm" and m["responses_truncated_by_ranker"] == 0
    assert m["mean_chosen_chars"] > m["mean_rejected_chars"]  # the tiny PairRM likes saying more
    for png in ("02_scores.png", "02_pair_lengths.png"):
        assert (tiny_run / "iter_1" / png).stat().st_size > 5000


def test_killed_scoring_resumes_to_the_same_dataset(tiny_run):
    st = stage(tiny_run.parent, "rerank", prompts_per_iteration=40, shard_size=8)
    out = st.iter_dir / "preference_data"
    before = preference_data.load_split(out, "train_iteration_1").to_pandas()
    shards = sorted((st.iter_dir / "preference_data.scores").glob("shard-*.parquet"))
    assert len(shards) == 5
    shards[-1].unlink()  # as if killed while scoring the last shard
    _, stats = rerank.rerank(st, st.iter_dir / "generations.parquet", out)
    assert stats["shards_resumed"] == 4
    after = preference_data.load_split(out, "train_iteration_1").to_pandas()
    pd.testing.assert_frame_equal(after, before)


def test_rerun_skips_the_finished_stage(tiny_run, runs_dir):
    out = cli("run", "-f", "recipes/tiny.yaml", "--iterations", "1",
              *params_args(runs_dir=runs_dir, run_name="rerank", prompts_per_iteration=40, shard_size=8)).stdout
    assert "02_rerank: done for these params and inputs, skipped" in out


ALPACA = REPO_ROOT.parent / "shared" / "alpaca_eval"
ANSWERERS = ["Mistral-7B-Instruct-v0.2", "Snorkel-Mistral-PairRM-DPO", "SPPO-Mistral7B-PairRM"]


@pytest.fixture
def short_pairrm(pairrm):
    """The tiny PairRM reading at most 96 prompt and 64+ answer tokens (its own 1224/412 take
    ~0.5 s a comparison on long texts on a CPU): real AlpacaEval texts overrun both."""
    cfg = pairrm.blender.ranker_config
    saved = cfg.source_maxlength, cfg.candidate_maxlength
    cfg.source_maxlength, cfg.candidate_maxlength = 96, 64
    try:
        yield pairrm
    finally:
        cfg.source_maxlength, cfg.candidate_maxlength = saved


def alpaca_texts(rows: list[int]) -> tuple[list[str], list[list[str]]]:
    """AlpacaEval instructions and their real answers: GPT-4-turbo's and three published models'."""
    reference = json.loads((ALPACA / "reference_gpt4_1106_preview.json").read_text())
    outputs = [json.loads((ALPACA / "outputs" / f"{m}.json").read_text()) for m in ANSWERERS]
    return ([reference[i]["instruction"] for i in rows],
            [[reference[i]["output"]] + [o[i]["output"] for o in outputs] for i in rows])


def test_length_bucketing_keeps_every_score_and_pads_less(short_pairrm):
    # short and long instructions (the longest AlpacaEval ones overrun 96 tokens), answers of 3 to 1,700 words
    rows = [0, 5, 95, 150, 273, 300, 433, 500, 640, 700]
    prompts, candidates = alpaca_texts(rows)
    prompts[1] = " ".join(candidates[8])  # a prompt far over the source max length
    candidates[2], candidates[6] = candidates[2][:3], candidates[6][:2]  # other candidate counts: other groups
    sources, lengths = short_pairrm.lengths(prompts, candidates)
    assert max(sources) == 96 and min(sources) < 20 and max(map(max, lengths)) > 64 > min(map(min, lengths))
    collator = copy.copy(short_pairrm.blender.ranker_collator)  # as rank() sets it up
    collator.source_maxlength, collator.candidate_maxlength = 96, 64
    for p, c, s, n in zip(prompts, candidates, sources, lengths):  # the lengths are what the collator reads
        batch = collator([{"source": p, "candidates": c}])
        assert batch["source_attention_mask"].sum() == s and batch["candidate_attention_mask"].sum(-1)[0].tolist() == n
    assert short_pairrm.batches(prompts, candidates, 3, bucketing=True) != \
        short_pairrm.batches(prompts, candidates, 3, bucketing=False)
    fed = []  # the backbone's input sizes: (ids incl. padding, real tokens)
    hook = short_pairrm.blender.ranker.pretrained_model.register_forward_pre_hook(
        lambda _, args, kw: fed.append((kw["input_ids"].numel(), int(kw["attention_mask"].sum()))), with_kwargs=True)
    try:
        plain = short_pairrm.score(prompts, candidates, 3, bucketing=False)
        fed_plain, fed[:] = np.sum(fed, axis=0).tolist(), []
        bucketed = short_pairrm.score(prompts, candidates, 3, bucketing=True)
        fed_bucketed = np.sum(fed, axis=0).tolist()
    finally:
        hook.remove()
    assert [len(s) for s in bucketed] == [len(c) for c in candidates]
    for a, b in zip(plain, bucketed):
        np.testing.assert_allclose(b, a, atol=1e-5)
        assert (b.argmax(), b.argmin()) == (a.argmax(), a.argmin())
    with_buckets = short_pairrm.tokens(prompts, candidates, 3, bucketing=True)
    without = short_pairrm.tokens(prompts, candidates, 3, bucketing=False)
    assert [without["processed"], without["unpadded"]] == fed_plain  # counted as the backbone is fed
    assert [with_buckets["processed"], with_buckets["unpadded"]] == fed_bucketed
    assert with_buckets["unpadded"] == without["unpadded"] < with_buckets["processed"] < without["processed"]


def test_a_prompts_scores_do_not_depend_on_its_batch_neighbours(short_pairrm, monkeypatch):
    """llm-blender gives candidates ``candidate_maxlength + (source_maxlength - the batch's longest
    source) // 2`` tokens; the compat collator truncates each example as if it were alone."""
    from llm_blender.pair_ranker.collator import CrossCompareCollator
    prompts, candidates = alpaca_texts([150, 273, 640])  # a short instruction with long answers first
    prompts[1] = prompts[2] = " ".join(candidates[2])  # neighbours with prompts over the source max length
    blender = short_pairrm.blender

    def alone_and_in_a_batch():
        return (blender.rank(prompts[:1], candidates[:1], return_scores=True, batch_size=1, disable_tqdm=True)[0],
                blender.rank(prompts, candidates, return_scores=True, batch_size=3, disable_tqdm=True)[0])
    alone, in_batch = alone_and_in_a_batch()
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    monkeypatch.setattr(CrossCompareCollator, "__call__", CrossCompareCollator.__call__.collate_batch)
    unpatched_alone, unpatched_in_batch = alone_and_in_a_batch()  # llm-blender's own collator
    np.testing.assert_allclose(unpatched_alone, alone, atol=1e-5)
    assert np.abs(unpatched_in_batch - alone).max() > 1e-3
