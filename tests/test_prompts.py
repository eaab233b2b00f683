"""Prompt loading: local files and the same code path a hub dataset takes."""
import json

import pytest

from nbutils.tiny import corpus as tiny_corpus
from nbutils.generate.prompts import PromptError, iteration_prompts, load_prompt_source

TINY = "nbutils/data/tiny_prompts.jsonl"


def write_lines(path, lines):
    path.write_text("".join(l + "\n" for l in lines))
    return str(path)


def test_bundled_prompts_are_what_the_generator_writes():
    train, evaluation = tiny_corpus.prompt_sets()
    for rows, path in [(train, tiny_corpus.TRAIN_PROMPTS), (evaluation, tiny_corpus.EVAL_PROMPTS)]:
        assert [json.loads(l) for l in path.read_text().splitlines()] == rows
    assert len(train) >= 300 and len(evaluation) >= 64
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evaluation}


def test_iterations_get_disjoint_subsets():
    subsets = [set(iteration_prompts(TINY, "train", n, 64, 3)["prompt_id"]) for n in (1, 2, 3)]
    assert all(len(s) == 64 for s in subsets)
    assert not (subsets[0] & subsets[1] or subsets[1] & subsets[2] or subsets[0] & subsets[2])


def test_pool_too_small_for_all_iterations():
    with pytest.raises(PromptError, match="need"):
        iteration_prompts(TINY, "train", 1, 400, 3)


def test_malformed_line_is_named(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "b"', '{"prompt": "c"}'])
    with pytest.raises(PromptError, match="line 2: not valid JSON"):
        load_prompt_source(f, "train")


def test_empty_prompt_is_named(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "  "}'])
    with pytest.raises(PromptError, match="line 2: empty prompt"):
        load_prompt_source(f, "train")


def test_row_without_prompt_is_named(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", ['{"text": "a"}'])
    with pytest.raises(PromptError, match="line 1: a row must be an object with a 'prompt'"):
        load_prompt_source(f, "train")


def test_missing_file():
    with pytest.raises(PromptError, match="not found"):
        load_prompt_source("nbutils/data/nope.jsonl", "train")


def test_prompt_id_added_and_duplicates_dropped(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "a"}', '{"prompt": "b"}'])
    ds = iteration_prompts(f, "train", 1, 3, 1)
    assert ds["prompt"] == ["a", "b"] and ds["prompt_id"][0] == tiny_corpus.prompt_id("a")


def test_empty_prompt_in_parquet_is_named_by_row(tmp_path):
    import pandas as pd
    path = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["x", "y", ""]}).to_parquet(path)
    with pytest.raises(PromptError, match="row 2: empty prompt"):
        load_prompt_source(str(path), "train")
