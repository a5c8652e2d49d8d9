"""Loading and validating configs the way Snakemake does (config.yaml, then presets on top)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "config.schema.yaml"


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
    """Validate against the JSON schema (snakemake.utils.validate); raise ConfigError naming the key."""
    from snakemake.utils import validate

    try:
        validate(config, str(schema), set_default=False)
    except Exception as exc:  # snakemake wraps jsonschema's error in a long WorkflowError
        raise ConfigError(_first_problem(config, schema) or str(exc)) from None
    return config


def _first_problem(config: dict, schema: str | Path) -> str | None:
    """The most relevant schema violation, as 'config key a.b[1]: message'."""
    import jsonschema

    with open(schema) as fh:
        schema_doc = yaml.safe_load(fh)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema_doc).iter_errors(config))
    if error is None:
        return None
    key = ""
    for part in error.absolute_path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return f"invalid config key '{key or '<top level>'}': {error.message}"
