"""The tiny policy: built deterministically, writes words, follows its chat template; built once."""
import multiprocessing
import time

import pytest
import torch
from safetensors.torch import load_file

from nbutils.tiny.cache import cached_build
from nbutils.tiny.policy import TinyPolicySpec, tiny_policy_path, train_tiny_policy

pytestmark = pytest.mark.slow


def test_same_spec_builds_the_same_weights(tmp_path):
    spec = TinyPolicySpec(num_examples=200, steps=5)
    a = train_tiny_policy(spec, tmp_path / "a", progress=False)
    b = train_tiny_policy(spec, tmp_path / "b", progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_tiny_policy_answers_in_words_and_stops():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_policy_path(progress=False)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    config = model.config
    assert config.model_type == "mistral" and config.head_dim >= 32
    chat = [[{"role": "user", "content": f"Give me some tips about {t}."}] for t in ("chess", "tea")]
    enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                  padding=True, return_dict=True)
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=False).endswith("[/INST]")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=96,
                         num_return_sequences=5, pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    stopped = sum(tok.eos_token_id in row.tolist() for row in new)
    texts = tok.batch_decode(new, skip_special_tokens=True)
    words = " ".join(texts).split()
    assert stopped >= 8, f"only {stopped}/10 answers ended with </s>"
    assert len(words) >= 50 and sum(w.isalpha() for w in words) / len(words) > 0.6
    assert "<unk>" not in " ".join(texts)
    assert sum("chess" in t for t in texts[:5]) >= 2, texts[:5]  # mostly on topic


def _build_slowly(tmp):
    tmp.mkdir()
    time.sleep(1)
    (tmp / "tiny_spec.json").write_text("{}")
    with open(tmp.parent.parent / "builds.log", "a") as log:  # beside the target
        log.write("built\n")


def _need(target):
    return sorted(p.name for p in cached_build(target, _build_slowly).iterdir())


def test_two_processes_that_need_a_missing_model_build_it_once(tmp_path):
    """The second waits for the first's build instead of building it again over the first's readers."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        seen = pool.map(_need, [tmp_path / "model"] * 2)
    assert seen == [["tiny_spec.json"]] * 2 and (tmp_path / "builds.log").read_text() == "built\n"
