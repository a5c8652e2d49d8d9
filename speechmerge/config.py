"""Loading and validating configs the way Snakemake does (config.yaml, then presets on top)."""

from __future__ import annotations

import copy
import math
import os
from importlib.resources import files
from pathlib import Path

import yaml

#: The repository (of an editable install or a source checkout; a wheel has no config.yaml there).
ROOT = Path(__file__).resolve().parent.parent


def _package_data(package: str, name: str) -> Path:
    try:
        return Path(str(files(package) / name))
    except ModuleNotFoundError:  # an install made before the data became package data
        raise ModuleNotFoundError(
            f"{package} (package data {name}) is not installed with speechmerge: reinstall it "
            "(`make env`, or `pip install -e .` in the repository)"
        ) from None


#: The config schema, package data (schemas/config.schema.yaml in the repository).
SCHEMA = _package_data("speechmerge.schemas", "config.schema.yaml")
#: The checked-in text corpus, package data (resources/text/corpus.tsv in the repository).
CORPUS = _package_data("speechmerge.corpus", "corpus.tsv")
#: The corpus path config.yaml names; when it is not in the working directory the packaged one is read.
DEFAULT_CORPUS = "resources/text/corpus.tsv"


def corpus_path(configured: str | None, workflow_dir: str | os.PathLike | None = None) -> str:
    """The corpus file a config's ``corpus`` names: the path itself when it exists (relative to the
    working directory); else, for the default name, the corpus shipped with the package; else
    the path relative to ``workflow_dir`` (the Snakefile's directory). A path found nowhere is
    an error naming it."""
    if not configured or configured == DEFAULT_CORPUS and not Path(configured).exists():
        return str(CORPUS)
    if Path(configured).exists():
        return str(configured)
    if workflow_dir is not None and not Path(configured).is_absolute() and (Path(workflow_dir) / configured).exists():
        return str(Path(workflow_dir) / configured)
    raise ConfigError(
        f"config key corpus: {configured!r} does not exist (relative paths are read from the "
        f"working directory {Path.cwd()}" + (f" or {workflow_dir}" if workflow_dir else "") + ")"
    )


class ConfigError(ValueError):
    """A config that fails the schema; the message names the key at fault."""


def deep_update(base: dict, other: dict) -> dict:
    """Recursive dict update, as Snakemake applies ``--configfile`` over ``configfile:``."""
    out = copy.deepcopy(base)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*paths: str | Path) -> dict:
    """Read config files in order, each updating the previous (no validation)."""
    config: dict = {}
    for path in paths:
        with open(path) as fh:
            config = deep_update(config, yaml.safe_load(fh) or {})
    return config


def validate_config(config: dict, schema: str | Path = SCHEMA) -> dict:
    """Validate against the JSON schema (snakemake.utils.validate); raise ConfigError naming the key.

    Values given on the command line (``--config seeds=[0,1]``) reach the config as strings where
    they sit in a list or mapping (Snakemake parses those with YAML's base loader); a string where
    the schema wants a number, boolean or null is converted in place when it reads as one."""
    from snakemake.utils import validate

    coerce_command_line_strings(config, schema)
    try:
        validate(config, str(schema), set_default=False)
    except Exception as exc:  # snakemake wraps jsonschema's error in a long WorkflowError
        raise ConfigError(_first_problem(config, schema) or str(exc)) from None
    return config


def _schema_doc(schema: str | Path) -> dict:
    with open(schema) as fh:
        return yaml.safe_load(fh)


_NOT = object()  # a string that does not read as the wanted type


def _read_scalar(kind: str, text: str):
    t = text.strip()
    if kind == "integer":
        return int(t) if t.lstrip("+-").isdigit() else _NOT
    if kind == "number":
        try:
            value = float(t)
        except ValueError:
            return _NOT
        return value if math.isfinite(value) else _NOT
    if kind == "boolean":
        return {"true": True, "false": False}.get(t.lower(), _NOT)
    if kind == "null":
        return None if t in ("null", "~") else _NOT
    return _NOT


def coerce_command_line_strings(config: dict, schema: str | Path = SCHEMA) -> list[str]:
    """Convert, in place, every string at a place where the schema wants an integer, number,
    boolean or null and that reads as one ("1", "0.5", "true", "null"); returns the keys changed."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema_doc(schema))
    changed: list[str] = []
    while True:
        fix = None
        for error in validator.iter_errors(config):
            if error.validator != "type" or not isinstance(error.instance, str) or not error.absolute_path:
                continue
            wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            for kind in ("integer", "number", "boolean", "null"):
                value = _read_scalar(kind, error.instance) if kind in wanted else _NOT
                if value is not _NOT:
                    fix = (list(error.absolute_path), value)
                    break
            if fix:
                break
        if fix is None:
            return changed
        *parents, last = fix[0]
        node = config
        for part in parents:
            node = node[part]
        node[last] = fix[1]
        changed.append(_key_name(fix[0]))


def _key_name(path) -> str:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _first_problem(config: dict, schema: str | Path) -> str | None:
    """The most relevant schema violation, as 'config key a.b[1]: message'."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema_doc(schema)).iter_errors(config))
    if error is None:
        return None
    key = _key_name(error.absolute_path)
    message = error.message
    if error.validator == "pattern" and isinstance(error.schema, dict) and error.schema.get("description"):
        message += f" ({' '.join(error.schema['description'].split())})"
    if error.validator == "type" and isinstance(error.instance, str):
        message += " (on the command line, write lists and mappings as YAML: --config 'seeds=[0, 1]')"
    return f"invalid config key '{key or '<top level>'}': {message}"
