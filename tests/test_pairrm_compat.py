"""llm-blender's PairRM under transformers 5 scores exactly as under transformers 4.x."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nbutils.compat import llm_blender as pairrm_compat
from nbutils.store.files import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "pairrm_parity"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TEXTS = EXPECTED["prompts"] + [c for row in EXPECTED["candidates"] for c in row]


@pytest.fixture(scope="module")
def blender():
    return pairrm_compat.load_blender(str(FIXTURE / "ranker"))


def test_fixture_was_recorded_under_transformers_4():
    assert EXPECTED["built_with"]["transformers"].startswith("4.")
    assert any(not t.isascii() for t in EXPECTED["prompts"])


def test_token_ids_match_transformers_4_exactly(blender):
    assert [blender.ranker_tokenizer(t)["input_ids"] for t in TEXTS] == EXPECTED["token_ids"]


def assert_scores(scores):
    """The recorded scores within 1e-6: float32 sums may round differently on another CPU's BLAS;
    the silent errors this guards against (fp16, other tokens) move them by 1e-3 or more."""
    np.testing.assert_allclose(scores, np.array(EXPECTED["scores"], dtype=np.float32), rtol=1e-6, atol=1e-6)


def test_scores_match_transformers_4_within_1e6(blender):
    scores = blender.rank(EXPECTED["prompts"], EXPECTED["candidates"], return_scores=True, batch_size=3)
    assert_scores(scores)


def test_fixture_catches_both_silent_errors(blender):
    """Without the fixes the fixture's texts tokenize differently and the backbone is fp16."""
    from transformers import AutoModel, AutoTokenizer
    plain = AutoTokenizer.from_pretrained(FIXTURE / "backbone")
    assert sum(plain(t)["input_ids"] != e for t, e in zip(TEXTS, EXPECTED["token_ids"])) >= 5
    assert AutoModel.from_pretrained(FIXTURE / "backbone").dtype == torch.float16
    checkpoint = load_file(FIXTURE / "ranker" / "model.safetensors")
    assert any(not torch.equal(v.half().float(), v) for v in checkpoint.values())  # fp16 would round
    loaded = blender.ranker.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in checkpoint.items())


def test_missing_ranker_path_is_a_clear_error_without_a_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ranker directory"):
        pairrm_compat.load_blender(str(tmp_path / "PairRM"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        pairrm_compat.load_blender(str(tmp_path / "empty"))


@pytest.mark.parametrize("change", ["drop", "add"])
def test_checkpoint_keys_must_fit_exactly(tmp_path, change):
    shutil.copytree(FIXTURE, tmp_path / "fx")
    weights_file = tmp_path / "fx" / "ranker" / "model.safetensors"
    weights = load_file(weights_file)
    if change == "drop":
        weights.pop("head_layer.4.bias")
    else:
        weights["head_layer.9.weight"] = torch.zeros(1)
    save_file(weights, weights_file)
    with pytest.raises((ValueError, RuntimeError), match="head_layer"):
        pairrm_compat.load_blender(str(tmp_path / "fx" / "ranker"))


def test_backbone_path_with_a_trap_word_loads_the_same(tmp_path, blender):
    """llm-blender sniffs "phi"/"llama" in backbone paths; a user's folder name must not matter."""
    shutil.copytree(FIXTURE, tmp_path / "philip-llama")
    other = pairrm_compat.load_blender(str(tmp_path / "philip-llama" / "ranker"))
    scores = other.rank(EXPECTED["prompts"], EXPECTED["candidates"], return_scores=True, batch_size=3)
    assert_scores(scores)
