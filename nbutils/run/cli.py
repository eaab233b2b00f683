"""``python -m nbutils``: run the workbook, check params, list them, build tiny models."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nbutils.run import params as P
from nbutils.exec.devices import DeviceError
from nbutils.sources.hub import HubError
from nbutils.run.lock import RunLocked
from nbutils.run.preflight import PreflightError
from nbutils.run.runner import DiskFull
from nbutils.run.commands import InputError
from nbutils.show.book import BookError


def _overrides(pairs: list[list[str]] | None) -> dict:
    """``-p key value`` pairs; values read as YAML scalars (5 → int, 0.5 → float)."""
    return {k: P.parse_yaml(v) for k, v in (pairs or [])}


def gpu_name(value: str) -> str:
    """``--gpu``: a card the plan knows, in any case (``H100`` as people write it)."""
    from nbutils.run.throughput import GPUS
    if value.lower() not in GPUS:
        raise argparse.ArgumentTypeError(f"unknown card {value!r}; known: {', '.join(GPUS)}")
    return value.lower()


def preset_file(value: str) -> str:
    """``-f``: a params file that exists (relative paths: from the repository root)."""
    from nbutils.store.files import repo_path
    if not repo_path(value).is_file():
        recipes = ", ".join(f"recipes/{p.name}" for p in sorted(P.RECIPES_DIR.glob("*.yaml")))
        raise argparse.ArgumentTypeError(f"no such params file {value!r} (relative to the repository root); "
                                         f"recipes: {recipes}")
    return value


def iteration_numbers(value: str) -> list[int]:
    """``--iterations``: comma-separated iteration numbers (``1,2``)."""
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected iteration numbers separated by commas, e.g. 1,2; "
                                         f"got {value!r}") from None


def comparison_name(value: str) -> str:
    """``--name``: a folder name under runs_dir."""
    import re
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a folder name (letters, digits, '.', '-', '_')")
    return value


def run_folder(value: str) -> str:
    """``book --run``: a finished run (its report.html), as a folder or a name under runs/."""
    from nbutils.store.files import repo_path
    path = repo_path(value) if "/" in value or os.sep in value else repo_path("runs") / value
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no run at {path}: run it first "
                                         "(python -m nbutils run -f recipes/<name>.yaml)")
    if not (path / "report.html").is_file():
        raise argparse.ArgumentTypeError(f"{path} has no report.html: finish the run first "
                                         "(python -m nbutils run -f <its recipe>; finished stages are not rerun)")
    return str(path)


def default_run() -> str:
    """The real-model demo's run where it has a report, else ``make demo``'s."""
    from nbutils.store.files import repo_path
    return run_folder("smol" if repo_path("runs/smol/report.html").is_file() else "tiny")


def parser() -> argparse.ArgumentParser:
    """The commands and their options (tests/test_cli_errors.py sweeps each with a bad value)."""
    ap = argparse.ArgumentParser(prog="python -m nbutils", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "run the stages with papermill"),
                        ("validate", "resolve and check params, print the result"),
                        ("report", "rewrite runs/<run>/report.html and print the summary"),
                        ("preflight", "check this machine for a preset (CUDA, versions, disk, RAM, hub), "
                                      "then print the plan; exit 1 with what fails"),
                        ("evaluate", "judge model_outputs.json files with the preset's judge against its "
                                     "reference; rows saved to runs/<run>/evaluated/leaderboard.csv"),
                        ("calibrate-judge", "the preset's offline judge vs the leaderboard's GPT-4-turbo on the "
                                            "published judgments of calibration_models; runs/<run>/judge_calibration/")]:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("-f", dest="files", action="append", default=[], type=preset_file,
                        help="params preset, merged in order over params/base.yaml")
        sp.add_argument("-p", dest="pairs", nargs=2, action="append", metavar=("KEY", "VALUE"),
                        help="override one param")
        if name == "run":
            sp.add_argument("--iterations", type=iteration_numbers,
                            help="comma-separated iterations to run (default: all)")
            sp.add_argument("--stages", type=lambda s: s.split(","),
                            help="comma-separated stages, e.g. 01_generate (default: all)")
            sp.add_argument("--force", action="store_true", help="rerun finished stages")
            sp.add_argument("--verbose", action="store_true",
                            help="stream each notebook's output and the libraries' INFO logs to the terminal")
        if name == "evaluate":
            sp.add_argument("outputs", nargs="+", metavar="model_outputs.json",
                            help="alpaca_eval model_outputs.json files (instruction, output, generator)")
        if name in ("run", "preflight"):
            sp.add_argument("--dry-run", action="store_true", help="print the plan (work, memory, hours, disk) only")
        if name == "preflight":
            sp.add_argument("--gpu", type=gpu_name, help="plan for this card (h100, a100, l40s, rtx4090; any case) "
                                                          "instead of the one found")
    sp = sub.add_parser("compare", help="several recipes from the same iteration-1 samples and scores, then "
                                        "notebook 06 over their runs (runs/<name>/comparison.csv)")
    sp.add_argument("-f", dest="files", action="append", default=[], type=preset_file,
                    help="a complete recipe (recipes/<name>.yaml); two or more, the first's samples shared")
    sp.add_argument("-p", dest="pairs", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="override one param in every recipe (sizes, runs_dir)")
    sp.add_argument("--name", type=comparison_name,
                    help="the comparison's folder under runs_dir (default: compare-<run names>)")
    sp.add_argument("--verbose", action="store_true", help="stream each notebook's output to the terminal")
    sp = sub.add_parser("book", help="build runs/<run>/book/: a static site of README.md, docs/ and the run's report "
                                     "and executed notebooks (MkDocs; opens offline from file://)")
    sp.add_argument("--run", type=run_folder, help="the run: a folder or a name under runs/ "
                                                   "(default: smol if it has a report, else tiny)")
    sub.add_parser("params", help="list every param with its type and help")
    sub.add_parser("tiny", help="build (or find) the tiny models in the cache")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from nbutils.logs import LEVEL_ENV, quiet
    if getattr(args, "verbose", False):
        os.environ.setdefault(LEVEL_ENV, "INFO")
    quiet()
    try:
        if args.command == "run" and args.dry_run:
            ignored = [o for o, given in [("--iterations", args.iterations), ("--stages", args.stages),
                                          ("--force", args.force)] if given]
            if ignored:
                raise P.ParamsError(f"--dry-run plans the whole run: drop {', '.join(ignored)}")
            from nbutils.run.plan import format_plan, plan
            from nbutils.run.preflight import gpu_here
            values, _ = P.resolve(args.files, _overrides(args.pairs))
            gpu = gpu_here()
            print(format_plan(plan(values, gpu), gpu))
        elif args.command == "run":
            from nbutils.run.runner import run
            run(args.files, _overrides(args.pairs), args.iterations, args.stages, args.force, args.verbose)
        elif args.command == "preflight":
            from nbutils.run.preflight import preflight
            return preflight(*P.resolve(args.files, _overrides(args.pairs)), dry_run=args.dry_run, gpu=args.gpu)
        elif args.command == "report":
            from nbutils.run.runner import print_summary
            from nbutils.run.stage import stage_for
            values, _ = P.resolve(args.files, _overrides(args.pairs))
            run_dir = stage_for("05_length_analysis", values).run_dir
            if not run_dir.is_dir():
                raise P.ParamsError(f"no run at {run_dir}: run it first (python -m nbutils run ...)")
            from nbutils.run.report import run_config
            from nbutils.store.paths import RunFolder
            try:
                run_config(RunFolder(run_dir))  # a folder no stage has run in
            except FileNotFoundError as e:
                raise P.ParamsError(f"{e}: run it first (python -m nbutils run ...)") from None
            print_summary(run_dir, list(range(1, values["num_iterations"] + 1)))
        elif args.command == "evaluate":
            from nbutils.run.commands import evaluate_files
            evaluate_files(P.resolve(args.files, _overrides(args.pairs))[0], args.outputs)
        elif args.command == "calibrate-judge":
            from nbutils.run.commands import calibrate_judge
            calibrate_judge(P.resolve(args.files, _overrides(args.pairs))[0])
        elif args.command == "validate":
            values, sources = P.resolve(args.files, _overrides(args.pairs))
            for k, v in values.items():
                print(f"{k:24} {v!r:48} # {sources.get(k, '')}")
        elif args.command == "compare":
            from nbutils.run.compare import compare_recipes
            compare_recipes(args.files, _overrides(args.pairs), args.name or "", args.verbose)
        elif args.command == "book":
            from nbutils.run.report import executed_notebooks
            from nbutils.show.book import build_book
            run_dir = Path(args.run or default_run())
            print(build_book(run_dir, executed_notebooks(run_dir)) / "index.html")
        elif args.command == "params":
            for d in P.vocabulary().values():
                print(f"{d.name:24} {d.annotation:8} {d.notebook:14} {d.help}")
        elif args.command == "tiny":
            from nbutils.tiny.policy import tiny_policy_path
            print(tiny_policy_path())
    except (P.ParamsError, DeviceError, HubError, PreflightError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except argparse.ArgumentTypeError as e:  # book's default run, missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (InputError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a stage failed: say where, not papermill's whole traceback
        if type(e).__name__ != "PapermillExecutionError":
            raise
        print(f"error: {e.ename}: {e.evalue}\n(cell {e.exec_count}; the executed notebook "
              "holds the full traceback)", file=sys.stderr)
        return 1
    return 0
