"""One params vocabulary: presets merged in order, checked against the notebooks.

The notebooks' ``parameters`` cells are the schema: each key is a typed literal
assignment with a comment (``num_samples: int = 5  # responses per prompt``).
Recipes (``recipes/*.yaml``: complete, every key) and overlays
(``recipes/overlays/*.yaml``: sizes or devices, after a recipe) are flat dicts merged in order
over ``params/base.yaml``; then ``-p key value`` overrides. Validation (unknown keys,
types, ranges, paths) runs before any model loads and names the key and the
file it came from.
"""
from __future__ import annotations

import ast
import difflib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from nbutils.store.files import REPO_ROOT, repo_path
from nbutils.run.rules import RULES, check_relations

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
BASE_PRESET = PARAMS_DIR / "base.yaml"
RECIPES_DIR = REPO_ROOT / "recipes"  # complete recipes; overlays/ under it
SECRET_WORDS = ("token", "api_key", "apikey", "secret", "password")


class ParamsError(ValueError):
    """Bad parameters; the message names the key, or lists every problem, one per line."""


class _Loader(yaml.SafeLoader):
    """YAML as people type numbers: ``5e-6`` is a float (YAML 1.2, papermill's ``-p``), not the
    string PyYAML's YAML 1.1 makes of it (1.1 wants ``5.0e-6``)."""


_SCIENTIFIC = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(f"^{_SCIENTIFIC.pattern}$"), list("-+0123456789."))


def parse_yaml(text: str):
    """A params file, or one ``-p`` value, read as YAML (with 1.2's floats)."""
    return yaml.load(text, Loader=_Loader)


@dataclass(frozen=True)
class Declared:
    """One key of a notebook's parameters cell."""
    name: str
    annotation: str
    default: object
    help: str
    notebook: str


def parameters_cell(notebook: Path) -> str:
    cells = json.loads(Path(notebook).read_text())["cells"]
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return "".join(cell["source"])
    raise ParamsError(f"{notebook}: no cell tagged 'parameters'")


def declared_in(notebook: Path) -> dict[str, Declared]:
    """The typed literal assignments of a notebook's parameters cell, in order."""
    source = parameters_cell(notebook)
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            raise ParamsError(f"{notebook.name} line {node.lineno}: parameters must be "
                              "typed literal assignments like `x: int = 1  # what x is`")
        comment = lines[node.lineno - 1].partition("#")[2].strip()
        out[node.target.id] = Declared(node.target.id, ast.unparse(node.annotation),
                                       ast.literal_eval(node.value), comment, notebook.stem)
    return out


@functools.cache
def vocabulary(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, Declared]:
    """Every key any stage notebook declares; a key declared twice must agree on its type.
    Notebook 06 reads finished runs and declares its own few keys: not a recipe's."""
    vocab: dict[str, Declared] = {}
    for nb in sorted(Path(notebooks_dir).glob("0[1-5]_*.ipynb")):
        for name, d in declared_in(nb).items():
            if name in vocab and vocab[name].annotation != d.annotation:
                raise ParamsError(f"{name}: declared as {vocab[name].annotation} in "
                                  f"{vocab[name].notebook} but {d.annotation} in {d.notebook}")
            vocab.setdefault(name, d)
    return vocab


def coerce(value, annotation: str):
    """``value`` as ``annotation`` ('int', 'float', 'str', 'bool', 'X | None', 'Union[X, Y]' (the form
    papermill reads), 'list[X]'); raises TypeError if it is not one."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    union = re.fullmatch(r"Union\[(.*)\]", annotation)
    options = [a.strip() for a in (union.group(1).split(",") if union else annotation.split("|"))]
    if value is None:
        if "None" in options:
            return None
        raise TypeError(f"expected {annotation}, got null")
    for opt in (o for o in options if o != "None"):
        if (m := re.fullmatch(r"list\[(\w+)\]", opt)) and isinstance(value, list):
            return [coerce(v, m.group(1)) for v in value]
        kind = kinds.get(opt)
        if kind is bool and isinstance(value, bool):
            return value
        if kind in (int, float) and isinstance(value, int) and not isinstance(value, bool):
            return kind(value)
        if kind in (float, str) and isinstance(value, kind):
            return value
        if kind is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # "5e-6" from a YAML 1.1 reader (papermill -f): the number meant
    raise TypeError(f"expected {annotation}, got {type(value).__name__} {value!r}")


def load_preset(path: str | Path) -> dict:
    path = repo_path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}); "
                          "a params file holds one `key: value` per line") from None
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if not isinstance(data, dict) or any(isinstance(v, dict) for v in data.values()):
        raise ParamsError(f"{path}: a params file is a flat mapping of key: value")
    return data


def merge(files: list[str | Path], overrides: dict | None = None) -> tuple[dict, dict]:
    """(values, sources): base.yaml, then ``files`` in order, then ``overrides``.
    ``sources[key]`` names where the winning value came from."""
    values, sources = {}, {}
    for f in [BASE_PRESET, *files]:
        for k, v in load_preset(f).items():
            values[k], sources[k] = v, str(f)
    for k, v in (overrides or {}).items():
        values[k], sources[k] = v, "-p override"
    return values, sources


def unknown_key_message(key: str, vocab: dict) -> str:
    if any(w in key.lower() for w in SECRET_WORDS):
        return (f"{key}: secrets are never parameters (papermill writes parameters into the "
                "executed notebook); set them in the environment, e.g. HF_TOKEN")
    close = difflib.get_close_matches(key, vocab, n=1)
    return f"{key}: unknown parameter" + (f" (did you mean '{close[0]}'?)" if close else "")


def validate(values: dict, sources: dict | None = None, keys: dict | None = None) -> dict:
    """Check every key against the vocabulary (or ``keys``); return coerced values.
    Raises ParamsError listing all problems."""
    vocab = vocabulary() if keys is None else keys
    sources = sources or {}
    problems, out = [], {}
    for key, value in values.items():
        where = f" (from {sources[key]})" if key in sources else ""
        if key not in vocab:
            problems.append(unknown_key_message(key, vocab) + where)
            continue
        try:
            out[key] = coerce(value, vocab[key].annotation)
        except TypeError as e:
            problems.append(f"{key}: {e}{where}")
            continue
        if key in RULES and (msg := RULES[key](out[key])):
            problems.append(f"{key}: {msg}, got {value!r}{where}")
    if not problems:
        problems += check_relations(out)
    if len(problems) == 1:  # one problem, one line
        raise ParamsError(f"invalid parameter {problems[0]}")
    if problems:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(problems))
    return out


def overlay_alone(overlay: str, under: str) -> str:
    return (f"overlay: {overlay!r} changes sizes or devices only and needs a complete recipe before it, not "
            f"{under}: e.g. -f recipes/snorkel.yaml -f recipes/overlays/{overlay}.yaml")


def resolve(files: list[str | Path], overrides: dict | None = None) -> tuple[dict, dict]:
    """Merged and validated (values, sources); every declared key gets a value. An overlay
    (``overlay`` set) with no recipe before it (``recipe`` still base.yaml's) is refused."""
    values, sources = merge(files, overrides)
    if values.get("overlay") and sources.get("recipe") == str(BASE_PRESET):
        raise ParamsError(overlay_alone(values["overlay"], "params/base.yaml alone"))
    missing = sorted(set(vocabulary()) - set(values))
    if missing:
        raise ParamsError(f"{BASE_PRESET.name} lacks declared keys: {', '.join(missing)}")
    return validate(values, sources), sources
