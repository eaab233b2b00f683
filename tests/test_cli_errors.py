"""Bad input everywhere in the CLI (issue 25): every command of ``python -m nbutils``, each of its options with a
bad value, exits 2 with one line that names the option (or the key, or the file), and no traceback; nothing
starts first (no run, no model, no network). The options come from the CLI's own parser, so a new option
without a bad value here fails ``test_every_option_has_bad_values``."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from nbutils.run.cli import parser
from nbutils.store.files import REPO_ROOT
from tests.conftest import cli

# option string (a positional: its metavar; the subcommand itself: "command") → bad arguments, each with what
# its error line must contain; "{tmp}" is a folder of this test. Every command with the option gets each case.
BAD: dict[str, list[tuple[list[str], list[str]]]] = {
    "command": [([], ["command"]), (["no-such-command"], ["no-such-command", "validate"])],
    "-f": [(["-f", "params/no-such-preset.yaml"], ["-f", "no-such-preset.yaml", "recipes/tiny.yaml"]),
           (["-f", "params"], ["-f", "'params'"]),  # a folder
           (["-f", "{tmp}/broken.yaml"], ["broken.yaml", "not valid YAML"]),
           (["-f", "{tmp}/nested.yaml"], ["nested.yaml", "flat"])],
    "-p": [(["-p", "no_such_key", "1"], ["no_such_key", "unknown parameter", "-p"]),
           (["-p", "num_sample", "3"], ["num_sample", "num_samples"]),
           (["-p", "num_iterations", "three"], ["num_iterations", "expected int", "-p"]),
           (["-p", "num_iterations", "0"], ["num_iterations", "at least 1"]),
           (["-p", "temperature", "-1"], ["temperature"]),
           (["-p", "reference_outputs", "{tmp}/no-such-outputs.json"], ["reference_outputs"]),
           (["-p", "hf_token", "hf_abc"], ["hf_token", "environment"]),
           (["-p", "seed"], ["-p", "2 arguments"])],
    "--iterations": [(["--iterations", "one"], ["--iterations", "'one'"]),
                     (["--iterations", "1,,2"], ["--iterations"]),
                     (["--iterations", "0"], ["--iterations", "outside 1.."]),
                     (["--iterations", "-1"], ["--iterations", "outside 1.."]),
                     (["--iterations", "99"], ["--iterations", "outside 1.."]),
                     (["--iterations", "2"], ["--iterations", "iteration 1"])],  # iteration 1 never ran
    "--stages": [(["--stages", "99_no_such_stage"], ["--stages", "99_no_such_stage", "01_generate"]),
                 (["--stages", "01_generate,"], ["--stages"])],
    "--gpu": [(["--gpu", "b200"], ["--gpu", "'b200'", "h100"]), (["--gpu", ""], ["--gpu", "h100"])],
    "model_outputs.json": [([], ["model_outputs.json"]),
                           (["{tmp}/no-such/model_outputs.json"], ["no-such/model_outputs.json", "no such file"]),
                           (["{tmp}/not-json.json"], ["not-json.json", "not JSON"]),
                           (["{tmp}/empty.json"], ["empty.json", "non-empty list"]),
                           (["{tmp}/no-output.json"], ["no-output.json", "row 0", "output"])],
    "--name": [(["--name", "../elsewhere"], ["--name", "not a folder name"]), (["--name", ""], ["--name"])],
    "--run": [(["--run", "{tmp}/runs/no-such-run"], ["--run", "no-such-run", "no run at"]),
              (["--run", "no-such-run-name"], ["--run", "runs/no-such-run-name", "no run at"]),
              (["--run", "{tmp}/runs/empty"], ["--run", "empty", "no report.html"])],  # a run not finished
    # flags: a case only where a combination is wrong
    "--force": [],
    "--verbose": [],
    "--dry-run": [],
}
# bad input one command has, beyond BAD's (command, option) → cases
EXTRA: dict[tuple[str, str], list[tuple[list[str], list[str]]]] = {
    ("run", "--dry-run"): [(["--dry-run", "--stages", "01_generate"], ["--dry-run", "--stages"]),
                           (["--dry-run", "--iterations", "1", "--force"], ["--dry-run", "--iterations", "--force"])],
    ("report", "-p"): [(["-p", "run_name", "never-ran"], ["never-ran", "run it first"]),  # no such run folder
                       (["-p", "run_name", "empty"], ["empty", "not a run folder"])],  # a folder no stage ran in
}
FLAGS = {option for option, cases in BAD.items() if not cases}
# what every case of a command starts with: this test's runs folder; evaluate's file (but in its own cases)
BASE = ["-p", "runs_dir", "{tmp}/runs"]
OUTPUTS = ["{tmp}/model_outputs.json"]
# what a case must never reach: it was to fail before any of these (module, function)
GUARDS = [("nbutils.run.preflight", "before_run"),  # run: CUDA, versions, disk, the hub
          ("nbutils.run.preflight", "preflight"),  # preflight's checks
          ("nbutils.run.preflight", "gpu_here"),  # run --dry-run's plan
          ("nbutils.run.runner", "execute"),  # a notebook
          ("nbutils.run.runner", "print_summary"),  # report writes report.html
          ("nbutils.evaluate.answers", "reference_outputs"),  # evaluate: the reference (the hub), then the judge
          ("nbutils.sources.hub", "alpaca_eval"),  # calibrate-judge: the leaderboard, then the judge
          ("nbutils.tiny.policy", "tiny_policy_path")]  # tiny builds models


def actions() -> dict[str, dict[str, argparse.Action]]:
    """command → its options as the parser has them, by option string (a positional: by its metavar)."""
    subs = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {command: {a.option_strings[0] if a.option_strings else a.metavar or a.dest: a
                      for a in sp._actions if not isinstance(a, argparse._HelpAction)}
            for command, sp in subs.choices.items()}


def cases() -> list[tuple[str, str, list[str], list[str]]]:
    """(command, option, argv, needles) for every command and each of its options, plus a stray option each."""
    out = [("", "command", args, needles) for args, needles in BAD["command"]]
    for command, opts in actions().items():
        first = [*BASE, *OUTPUTS] if "model_outputs.json" in opts else BASE
        out.append((command, "--no-such-option", [command, *first, "--no-such-option"], ["--no-such-option"]))
        for option in opts:
            for args, needles in BAD.get(option, []) + EXTRA.get((command, option), []):
                out.append((command, option, [command, *(BASE if option == "model_outputs.json" else first), *args],
                            needles))
    return out


def test_every_option_has_bad_values():
    """A new option needs its bad values in BAD (or to be listed as a flag there, with [])."""
    found = {option for opts in actions().values() for option in opts}
    assert found - set(BAD) == set(), f"options without bad values in BAD: {sorted(found - set(BAD))}"
    assert set(BAD) - found - {"command"} == set(), f"BAD names options no command has: {sorted(set(BAD) - found)}"
    assert {option for _, option in EXTRA} <= found
    flags = {option for opts in actions().values() for option, a in opts.items() if a.nargs == 0}
    assert flags == FLAGS, "a flag takes no value: list it in BAD with [] (or its bad combinations in EXTRA)"


# One process calls main(argv) for every case (a process each would take minutes): stderr and stdout captured,
# SystemExit caught, and each guarded function raising WorkStarted (which no handler in the CLI catches).
SWEEP = """
import contextlib, importlib, io, json, sys, traceback
from nbutils.run.cli import main

class WorkStarted(BaseException):
    pass

def guard(name):
    def refuse(*args, **kw):
        raise WorkStarted(name)
    return refuse

for module, function in json.loads(sys.argv[1]):
    setattr(importlib.import_module(module), function, guard(f"{module}.{function}"))
results = []
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as e:
        code = e.code
    except BaseException:
        code = None
        err.write(traceback.format_exc())
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, sys.__stdout__)
"""


def error_lines(stderr: str) -> list[str]:
    """stderr less argparse's usage (``usage: ...`` and its indented continuation lines)."""
    lines, in_usage = [], False
    for line in stderr.splitlines():
        in_usage = line.startswith("usage:") or (in_usage and line.startswith(" "))
        if not in_usage and line.strip():
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-errors")
    (tmp / "runs" / "empty").mkdir(parents=True)
    (tmp / "broken.yaml").write_text("num_samples: [3\n")
    (tmp / "nested.yaml").write_text("generation:\n  num_samples: 3\n")
    (tmp / "not-json.json").write_text("[{\"instruction\": \"hi\",\n")
    (tmp / "empty.json").write_text("[]")
    (tmp / "no-output.json").write_text(json.dumps([{"instruction": "hi", "generator": "mine"}]))
    (tmp / "model_outputs.json").write_text(json.dumps([{"instruction": "hi", "output": "hello", "generator": "mine"}]))
    return tmp


def test_every_bad_value_is_one_line_naming_the_option_before_anything_starts(tmp):
    todo = cases()
    argvs = [[a.replace("{tmp}", str(tmp)) for a in argv] for _, _, argv, _ in todo]
    # nothing leaves this machine: no hub, and a dead proxy for anything else
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", SWEEP, json.dumps(GUARDS)], input=json.dumps(argvs), cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    wrong = []
    for (command, option, _, needles), argv, r in zip(todo, argvs, results):
        lines = error_lines(r["stderr"])
        problems = [p for p, bad in [
            (f"exit {r['code']}, not 2", r["code"] != 2),
            ("a traceback", "Traceback" in r["stderr"]),
            (f"{len(lines)} lines", len(lines) != 1),
            ("no 'error:'", not lines or "error: " not in lines[0]),
            (f"does not name {[n for n in needles if n.replace('{tmp}', str(tmp)) not in ''.join(lines[:1])]}",
             any(n.replace("{tmp}", str(tmp)) not in "".join(lines[:1]) for n in needles)),
            ("printed to stdout", r["stdout"].strip() != "")] if bad]
        if problems:
            wrong.append(f"{command or '(none)'} {option}: python -m nbutils {' '.join(argv)}\n"
                         f"    {'; '.join(problems)}\n    " + "\n    ".join(r["stderr"].splitlines()[-8:]))
    assert not wrong, f"{len(wrong)} of {len(todo)} bad inputs:\n" + "\n".join(wrong)
    assert not (tmp / "runs" / "tiny").exists() and not (tmp / "runs" / "ultrafeedback").exists()


def test_the_cli_says_it_in_one_line_as_a_user_types_it():
    """The same through ``python -m nbutils`` (its exit status and stderr), once."""
    proc = cli("validate", "-f", "recipes/tiny.yaml", "-p", "num_samples", "0", check=False)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: invalid parameter num_samples: must be at least 1, got 0 "
                                                "(from -p override)"]
