"""The params vocabulary: presets, notebooks and validation agree."""
import json

import pytest
import yaml

from nbutils.run import params as P
from tests.conftest import PRESETS, cli

NOTEBOOKS = sorted(P.NOTEBOOKS_DIR.glob("0[1-5]_*.ipynb"))  # the stages (06 reads runs: its own keys)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_key_is_declared_by_a_notebook(preset):
    undeclared = set(yaml.safe_load(preset.read_text())) - set(P.vocabulary())
    assert not undeclared, f"{preset.name}: keys no notebook declares: {undeclared}"


def test_base_preset_holds_every_declared_key():
    assert set(yaml.safe_load(P.BASE_PRESET.read_text())) == set(P.vocabulary())


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_resolves(preset):
    values, _ = P.resolve([preset])
    assert values["num_samples"] == 5 and values["num_iterations"] == 3 and values["recipe"] == preset.stem


def test_the_smoke_overlay_keeps_the_real_models_and_cuts_the_work():
    real, _ = P.resolve(["recipes/snorkel.yaml"])
    smoke, _ = P.resolve(["recipes/snorkel.yaml", "recipes/overlays/smoke.yaml"])
    for key in ("base_model", "ranker", "prompts_dataset", "prompts_split", "eval_dataset", "device", "dtype"):
        assert smoke[key] == real[key]
    assert (smoke["prompts_per_iteration"], smoke["num_samples"], smoke["max_steps"], smoke["eval_instructions"],
            smoke["best_of_n"]) == (16, 2, 2, 16, 2) and smoke["run_name"] != real["run_name"]
    assert (smoke["recipe"], smoke["overlay"]) == ("snorkel", "smoke")


def test_notebook_defaults_are_the_tiny_preset():
    tiny, _ = P.resolve(["recipes/tiny.yaml"])
    for nb in NOTEBOOKS:
        for name, d in P.declared_in(nb).items():
            assert d.default == tiny[name], f"{nb.name}: {name} = {d.default!r}, tiny preset {tiny[name]!r}"


def test_every_param_has_help_and_a_type():
    for d in P.vocabulary().values():
        assert d.help, f"{d.name} in {d.notebook} has no comment"
        P.coerce(d.default, d.annotation)


def test_recipe_defaults():
    base = yaml.safe_load(P.BASE_PRESET.read_text())
    assert base["base_model"] == "mistralai/Mistral-7B-Instruct-v0.2"
    assert base["prompts_dataset"] == "HuggingFaceH4/ultrafeedback_binarized"
    assert (base["prompts_per_iteration"], base["num_samples"], base["num_iterations"]) == (20000, 5, 3)


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("num_sample: 3\n")
    with pytest.raises(P.ParamsError) as e:
        P.resolve(["recipes/tiny.yaml", bad])
    assert "num_sample" in str(e.value) and str(bad) in str(e.value) and "num_samples" in str(e.value)


@pytest.mark.parametrize("key,value,needle", [
    ("temperature", "hot", "expected float"),
    ("num_samples", 2.5, "expected int"),
    ("num_samples", True, "expected int"),
    ("num_samples", 0, "at least 1"),
    ("top_p", 1.5, "(0, 1]"),
    ("backend", "onnx", "one of"),
    ("run_name", "../escape", "plain name"),
    ("prompts_dataset", "data/missing.jsonl", "no such file"),
    ("prompts_dataset", "not a hub id", "neither"),
    ("base_model", "./no/such/model", "no model"),
    ("iteration", 4, "past num_iterations"),
])
def test_bad_values_are_refused_naming_the_key(key, value, needle):
    with pytest.raises(P.ParamsError) as e:
        P.resolve(["recipes/tiny.yaml"], {key: value})
    assert key in str(e.value) and needle in str(e.value)


def test_int_is_accepted_for_float():
    values, _ = P.resolve(["recipes/tiny.yaml"], {"temperature": 1})
    assert values["temperature"] == 1.0 and isinstance(values["temperature"], float)


def test_secrets_are_not_params():
    with pytest.raises(P.ParamsError, match="environment"):
        P.resolve(["recipes/tiny.yaml"], {"hf_token": "hf_abc"})


def test_presets_merge_in_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("num_samples: 3\nseed: 1\n")
    b.write_text("num_samples: 4\n")
    values, sources = P.resolve(["recipes/tiny.yaml", a, b], {"seed": 7})
    assert (values["num_samples"], values["seed"], values["max_new_tokens"]) == (4, 7, 96)
    assert sources["num_samples"] == str(b) and sources["seed"] == "-p override"


def test_nested_preset_is_refused(tmp_path):
    bad = tmp_path / "nested.yaml"
    bad.write_text("generation:\n  num_samples: 3\n")
    with pytest.raises(P.ParamsError, match="flat"):
        P.resolve([bad])


def test_cli_refuses_bad_params_before_anything_runs(runs_dir):
    proc = cli("run", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(runs_dir),
               "-p", "run_name", "refused", "-p", "num_samples", "0", check=False)
    assert proc.returncode == 2 and "num_samples" in proc.stderr
    assert not (runs_dir / "refused").exists()


def test_cli_lists_params():
    out = cli("params").stdout
    assert "num_samples" in out and "responses per prompt" in out


def test_notebook_flags_only_what_papermill_injected(tmp_path):
    """A user's own variables (a rerun in JupyterLab) are not taken for mistyped params."""
    from nbutils.run.stage import resolve_notebook

    defaults = {k: d.default for k, d in P.declared_in(NOTEBOOKS[0]).items()}
    ns = {**defaults, "runs_dir": str(tmp_path), "stats": {"a": 1}, "In": ["", "stats = {}"]}
    assert resolve_notebook(NOTEBOOKS[0].stem, ns).params["runs_dir"] == str(tmp_path)
    ns["In"].append('# Parameters\nnum_sample = 3\nrun_name = "x"\n')
    with pytest.raises(P.ParamsError, match="num_sample: unknown parameter"):
        resolve_notebook(NOTEBOOKS[0].stem, ns)


@pytest.mark.parametrize("typed,value", [("5e-6", 5e-6), ("5.0e-6", 5e-6), ("1E-3", 1e-3), ("-2e+1", -20.0),
                                          ("3", 3), ("0.5", 0.5), ("true", True), ("[q_proj, v_proj]", ["q_proj", "v_proj"]),
                                          ("tiny", "tiny")])
def test_values_parse_as_people_type_them(typed, value):
    parsed = P.parse_yaml(typed)
    assert parsed == value and type(parsed) is type(value)


def test_scientific_notation_works_in_p_and_in_a_preset(tmp_path):
    assert P.resolve(["recipes/tiny.yaml"], {"learning_rate": P.parse_yaml("5e-6")})[0]["learning_rate"] == 5e-6
    preset = tmp_path / "lr.yaml"
    preset.write_text("learning_rate: 2e-5\n")
    assert P.resolve(["recipes/tiny.yaml", preset])[0]["learning_rate"] == 2e-5
    proc = cli("validate", "-f", "recipes/tiny.yaml", "-p", "learning_rate", "5e-6")
    assert "learning_rate            5e-06" in proc.stdout


def test_booleans_and_lists_parse_as_typed_in_p():
    """As papermill's -p and YAML 1.2 read them: True/false, [a, b], 1e3 for a float."""
    values, _ = P.resolve(["recipes/tiny.yaml"], {k: P.parse_yaml(v) for k, v in [
        ("gradient_checkpointing", "false"), ("keep_checkpoints", "True"), ("num_train_epochs", "1e0"),
        ("lora_target_modules", "[q_proj, v_proj]")]})
    assert values["gradient_checkpointing"] is False and values["keep_checkpoints"] is True
    assert values["num_train_epochs"] == 1.0 and values["lora_target_modules"] == ["q_proj", "v_proj"]
    proc = cli("validate", "-f", "recipes/tiny.yaml", "-p", "lora_target_modules", "[q_proj, v_proj]",
               "-p", "gradient_checkpointing", "false")
    assert "['q_proj', 'v_proj']" in proc.stdout and "gradient_checkpointing   False" in proc.stdout


def test_a_float_param_written_as_1_1_yaml_reads_it_is_still_a_float():
    """papermill -f reads presets with YAML 1.1, which leaves "5e-6" a string: the notebook takes it."""
    assert P.coerce("5e-6", "float") == 5e-6
    with pytest.raises(TypeError):
        P.coerce("fast", "float")


@pytest.mark.parametrize("overrides, needle", [
    ({"devices": 6, "tensor_parallel_size": 4}, "tensor_parallel_size: 4 does not divide devices (6)"),
    ({"distributed": "zero3", "load_in_4bit": True}, "load_in_4bit: true with distributed: zero3 is refused"),
    ({"distributed": "fsdp2", "load_in_4bit": True}, "load_in_4bit: true with distributed: fsdp2 is refused"),
    ({"finetuning": "full", "load_in_4bit": True}, "4-bit weights do not train"),
    ({"num_nodes": 2}, "num_nodes: 2 needs distributed: ddp, zero3 or fsdp2"),
    ({"distributed": "deepspeed"}, "distributed: must be one of none, ddp, zero3, fsdp2"),
])
def test_more_than_one_gpu_refuses_what_cannot_work_and_says_why(overrides, needle):
    values, sources = P.merge(["recipes/snorkel.yaml"], overrides)
    with pytest.raises(P.ParamsError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        P.validate(values, sources)


def test_where_work_runs_is_not_what_it_is():
    """devices and tensor_parallel_size leave a stage's identity alone (a run resumes on another number of
    GPUs), except for distributed training, where the processes share every batch."""
    from nbutils.run.stage import params_hash
    one = {"seed": 1, "devices": 1, "tensor_parallel_size": 1}
    assert params_hash(one) == params_hash({**one, "devices": 8, "tensor_parallel_size": 2})
    ddp = {**one, "distributed": "ddp"}
    assert params_hash(ddp) != params_hash({**ddp, "devices": 8})


def test_how_many_iterations_a_run_has_is_not_one_iterations_work(tmp_path):
    """Stages 01-03 of iteration n do the same work in a run of 2 or of 3 iterations (a run extended,
    an iteration copied into another run keep what is done); stages 04-05, over all iterations, do not.
    A manifest written when num_iterations was hashed with the rest still counts as done."""
    from nbutils.run.stage import params_hash, stage_for
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(tmp_path)})
    for notebook, same in (("01_generate", True), ("03_dpo_qlora", True), ("04_evaluate", False)):
        two, three = (stage_for(notebook, {**values, "num_iterations": n}).params for n in (2, 3))
        assert (params_hash(two) == params_hash(three)) is same, notebook
    stage = stage_for("01_generate", values)
    stage.manifest_path.parent.mkdir(parents=True)
    old_hash = "0123456789abcdef"  # an older version's hash of the same params
    stage.manifest_path.write_text(json.dumps({"notebook": "01_generate", "params": stage.params, "params_hash": old_hash,
                                               "inputs": {}, "outputs": {}}))
    assert "params changed" not in (stage.why_not_done() or "")
    stage.manifest_path.write_text(json.dumps({"notebook": "01_generate", "params": {**stage.params, "top_p": 0.5},
                                               "params_hash": old_hash, "inputs": {}, "outputs": {}}))
    assert stage.why_not_done() == "params changed (top_p)"
