"""Judges that read real text: the self-rewarding judge on SmolLM2-135M-Instruct (``ranker: self``)
and the relevance judge on WordLlama's static embeddings (``nbutils.rerank.axes:relevance``)."""
import numpy as np
import pandas as pd
import pytest

from nbutils.chat import prompt_ids
from nbutils.generate.policies import base_model_path
from nbutils.rerank import judges, ranking, self_judge
from nbutils.rerank.rankers import RankerError, load_ranker
from nbutils.run import params as P
from nbutils.run.stage import stage_for

pytestmark = pytest.mark.slow
BASE = "smollm2-135m-instruct"
PROMPTS = ["Name three primary colors.", "How do I boil an egg?"]
ANSWERS = [["Red, yellow and blue.", "I like turtles."],
           ["Put the egg in boiling water for nine minutes, then cool it in cold water.", "Paris is in France."]]


@pytest.fixture(scope="module")
def judge():
    """SmolLM2 as the self-judge, loaded once for the module (load_ranker's slot reuses it after)."""
    return load_ranker("self", "cpu", policy=base_model_path(BASE), label=f"self ({BASE})")


@pytest.fixture(scope="module")
def alone(judge):
    """Each answer's rating from a forward pass of its own (no padding, no memo)."""
    return [[judge.rate([judge.ids(p, a)])[0] for a in answers] for p, answers in zip(PROMPTS, ANSWERS)]


def test_self_judge_scores_are_expected_ratings_between_1_and_5(judge, alone):
    judge.memo.clear()
    scores = judge.score(PROMPTS, ANSWERS, batch_size=4)  # one left-padded batch of all four
    assert [len(s) for s in scores] == [2, 2]
    flat = np.concatenate(scores)
    assert ((flat >= 1) & (flat <= 5)).all() and len(set(flat.round(4))) == 4, flat  # real numbers: no ties here
    assert np.allclose(flat, np.concatenate(alone), rtol=0, atol=self_judge.TOLERANCE), (flat, alone)


def test_a_self_judge_score_does_not_depend_on_the_rest_of_its_batch(judge):
    """The same (instruction, answer) alone, left-padded beside a longer row, and beside a shorter
    one: equal within self_judge.TOLERANCE."""
    seq = judge.ids(PROMPTS[0], ANSWERS[0][0])
    longer = judge.ids(PROMPTS[1], ANSWERS[1][0] + " Peel it under running water; salt it to taste.")
    shorter = judge.ids("Hi", "Hello.")
    alone = judge.rate([seq])[0]
    padded, beside_shorter = judge.rate([seq, longer])[0], judge.rate([shorter, seq])[1]
    assert len(longer) > len(seq) > len(shorter)
    assert abs(padded - alone) < self_judge.TOLERANCE and abs(beside_shorter - alone) < self_judge.TOLERANCE, \
        (alone, padded, beside_shorter)


def test_the_judge_prompt_is_the_chat_templates_with_a_score_prefill(judge):
    """What the judge reads starts with what every stage's conversation gives for the judge prompt,
    the template's default system turn included, and ends with the prefill before the rating."""
    ids = judge.ids(PROMPTS[1], ANSWERS[1][0])
    expected = prompt_ids(judge.tokenizer, judge.judge_prompt(PROMPTS[1], ANSWERS[1][0]))
    assert ids[:len(expected)] == expected and judge.tokenizer.decode(ids[len(expected):]) == self_judge.PREFILL
    text = judge.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and ANSWERS[1][0] in text and PROMPTS[1] in text
    assert [judge.tokenizer.decode([i]) for i in judge.digits] == list("12345")


def test_self_needs_the_model_that_judges():
    with pytest.raises(RankerError, match="pass policy=<model folder>"):
        load_ranker("self", "cpu")


ON_OFF_TOPIC = [  # (instruction, on-topic answer, off-topic answer of about the same length)
    ("How do I bake bread at home?",
     "Mix flour, water, yeast and salt, knead the dough, let it rise, then bake it in a hot oven.",
     "The French Revolution began in 1789 when crowds in Paris stormed the Bastille prison fortress."),
    ("What should I feed my cat?",
     "Cats need meat: give your cat a good wet or dry cat food, fresh water, and few treats.",
     "Jupiter is the largest planet of the solar system, a gas giant with a great red storm."),
    ("Explain how a bicycle gear works.",
     "A bicycle gear links the pedals' chainring to a rear cog: a bigger cog makes pedaling easier.",
     "To make a good cup of tea, warm the pot, add leaves, pour boiling water and wait three minutes."),
]


def test_relevance_ranks_an_on_topic_answer_above_an_off_topic_one():
    ranker = load_ranker("nbutils.rerank.axes:relevance")
    prompts = [q for q, _, _ in ON_OFF_TOPIC]
    answers = [[on, off] for _, on, off in ON_OFF_TOPIC]
    assert all(abs(len(on) - len(off)) <= 10 for on, off in answers)  # length cannot decide
    scores = ranker.score(prompts, answers, batch_size=4)
    assert all(on > off for on, off in scores), scores


def test_ranker_self_through_stage_02(judge, alone, runs_dir):
    """``ranker: self`` on a 2-prompt generations table: iteration 1 is judged by the base model (the
    policy it samples from), score_rows gives the judge's scores, rerank writes pairs."""
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(runs_dir), "run_name": "self-judge", "ranker": "self",
                                                 "base_model": BASE, "test_fraction": 0.0, "device": "cpu"})
    stage = stage_for("02_rerank", values)
    assert judges.judge_model(stage) == (base_model_path(BASE), BASE)
    rows = [{"prompt_id": f"p{i}", "prompt": p, "all_generated_responses": [*a, ""]} for i, (p, a) in
            enumerate(zip(PROMPTS, ANSWERS))]
    judge.memo.clear()
    df, _ = ranking.score_rows(stage, judge, rows)
    for got, want in zip(df["all_rm_scores"], alone):
        assert got[2] is None and np.allclose(got[:2], want, rtol=0, atol=self_judge.TOLERANCE), (got, want)
    stage.iter_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(stage.iter_dir / "generations.parquet")
    splits, stats = ranking.rerank(stage, stage.iter_dir / "generations.parquet", stage.iter_dir / "preference_data")
    assert stats["ranker"] == f"self ({BASE})" and stats["pairs"] == 2
    train = splits["train_iteration_1"]
    best = [a[int(np.argmax(s))] for a, s in zip(ANSWERS, alone)]
    assert sorted(train["chosen"].map(lambda m: m[-1]["content"])) == sorted(best)
