"""Merge variants of the plan: every method an experiment lists, at its paper defaults or
dev-selected over a grid (``selection``), its paper-default row, and test-set sweeps; the notes
that say how the rows' hyperparameters were chosen."""

from __future__ import annotations

from speechmerge import names as N
from speechmerge.experiments.base import get_kind
from speechmerge.names import format_value
from speechmerge.plan.core import Plan, PlanError


def merge_method_labels() -> dict[str, str]:
    """Name -> display label of every registered merging method (the ``label`` of its class)."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    return {name: cls.label for name, cls in REGISTRY.items()}


def default_merges(plan: Plan, exp_name: str) -> dict[str, dict]:
    """method -> hyperparameters of its evaluated default merge (``{method}`` without selection,
    or ``{method}@defaults``; not a sweep point) as applied to the experiment's experts:
    N-dependent defaults such as LoRS' scaling = 1/N resolved by the method
    (``MergeMethod.resolved_hparams``). The report places the default on sweeps; the model each
    default is evaluated as is in the report spec's ``default_models``."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    out = {}
    for (e, variant), spec in plan.variants.items():
        method = spec["method"]
        if e != exp_name or method not in REGISTRY or spec.get("selection"):
            continue
        if N.parse_seeded(variant)[0] not in (method, N.default_variant(method)):
            continue
        merge = REGISTRY[method](**spec["hparams"])  # checked by _add_merges (_check_merge_hparams)
        out[method] = merge.resolved_hparams(len(spec["experts"]) or 1)
    return out


def selection_note(plan: Plan, exp_name: str) -> str:
    """How the merge rows' hyperparameters were chosen (the tables' provenance footnote)."""
    selected = plan.selected_variants(exp_name)
    if not selected:
        note = "hyperparameters: each method's default (docs/methods.md)"
    else:
        metric = plan.variants[(exp_name, selected[0])]["selection"]["metric"]
        what = "NP against the experts" if metric == "np" else "mean WER/CER"
        note = (
            f"merging hyperparameters chosen on the dev split ({what}; grids in merge_selection.csv); "
            "test sets never take part in the choice"
        )
    if plan.reports[exp_name].sweeps:
        note += "; sweep points are decoded on the test set and shown as test-set sweeps, not used to choose a row"
    return note


def _selection_grid(exp_name: str, exp: dict, method: str) -> dict:
    """The grid a method's dev selection searches: the experiment's ``selection.grids`` entry
    (``{}`` = no selection) or the method's own ``grid``; {} when selection is off."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    sel = exp.get("selection") or {}
    if not sel.get("enabled", True):
        return {}
    entry = (sel.get("grids") or {}).get(method)
    cls = REGISTRY.get(method)
    if entry is False:  # no selection: the method's defaults
        grid = {}
    elif entry is None:  # absent or null: the method's own grid
        grid = {p: list(v) for p, v in (cls.grid if cls is not None else {}).items()}
    else:
        grid = dict(entry)
    if cls is not None:
        unknown = sorted(set(grid) - set(cls.defaults))
        if unknown:
            raise PlanError(
                f"experiments.{exp_name}.selection.grids.{method}: unknown hyperparameter(s) {unknown}; "
                f"known: {sorted(cls.defaults)}"
            )
    for param, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PlanError(f"experiments.{exp_name}.selection.grids.{method}.{param}: give a non-empty list of values")
        _check_distinct(values, f"experiments.{exp_name}.selection.grids.{method}.{param}")
    return grid


def _check_distinct(values: list, key: str) -> None:
    """Values of a grid or sweep are distinct as the tables show them (``format_value``: 1 and 1.0
    are one point, which would give two identical rows)."""
    seen: dict[str, object] = {}
    for v in values:
        shown = format_value(v)
        if shown in seen:
            raise PlanError(
                f"config key '{key}': value {v!r} is listed twice ({list(values)}"
                + (
                    f"; {seen[shown]!r} and {v!r} are the same point"
                    if seen[shown] != v or type(seen[shown]) is not type(v)
                    else ""
                )
                + "); list each value once"
            )
        seen[shown] = v


def _default_rows(exp_name: str, exp: dict) -> set[str]:
    """Methods whose paper-default merge is also a row (``selection.default_rows``: true or a list)."""
    rows = (exp.get("selection") or {}).get("default_rows", False)
    merges = list(exp.get("merges", []))
    if rows is True:
        return set(merges)
    if not rows:
        return set()
    unknown = sorted(set(rows) - set(merges))
    if unknown:
        raise PlanError(
            f"experiments.{exp_name}.selection.default_rows: {unknown} not listed in experiments.{exp_name}.merges"
        )
    return set(rows)


def _check_merge_hparams(exp_name: str, method: str, hparams: dict, grid: dict) -> None:
    """The configured hyperparameters and every grid point are values the method accepts."""
    from speechmerge.merging import REGISTRY
    from speechmerge.merging.grid import expand_grid

    if method not in REGISTRY:
        return  # build_plan names an unknown method

    def check(hp: dict, key: str) -> None:
        try:
            REGISTRY[method](**hp)
        except (ValueError, KeyError, TypeError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise PlanError(f"config key 'experiments.{exp_name}.{key}.{method}': {msg}") from None

    check(hparams, "hparams")
    for point in expand_grid(grid):
        check({**hparams, **point}, "selection.grids")


def add_merges(
    plan: Plan, exp_name: str, exp: dict, experts: list[str], *, seed: int | None = None, tag: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Merge variants: ``merges`` (method names), ``hparams`` (method -> overrides), ``selection``
    (dev-split grids, paper-default rows) and ``sweeps`` (test-set sweeps); ``seed``: the training
    seed of ``experts`` (None: config ``seed``), ``tag``: the seed the variant names carry
    (``names.seeded``; None with one training seed)."""
    from speechmerge.merging import (
        REGISTRY,
        methods,  # noqa: F401  (imports register every method)
    )

    rows, sweeps = [], []
    seed = int(plan.config.get("seed", 0)) if seed is None else seed
    overrides = exp.get("hparams", {}) or {}
    unused = sorted(set(overrides) - set(exp.get("merges", [])))
    if unused:
        raise PlanError(f"experiments.{exp_name}.hparams: {unused} not listed in experiments.{exp_name}.merges")
    sel_cfg = exp.get("selection") or {}
    # grids of methods the experiment does not merge are ignored (a preset may shorten `merges`
    # without repeating the grids it inherits), but a name that is no method is an error
    unknown_grids = sorted(set(sel_cfg.get("grids") or {}) - set(REGISTRY))
    if unknown_grids:
        raise PlanError(
            f"experiments.{exp_name}.selection.grids: {unknown_grids} are no merge methods; known: {sorted(REGISTRY)}"
        )
    metric = sel_cfg.get("metric") or get_kind(exp["kind"]).selection_metric
    default_rows = _default_rows(exp_name, exp)
    labels = merge_method_labels()
    for method in exp.get("merges", []):
        grid = _selection_grid(exp_name, exp, method) if method in REGISTRY else {}
        hparams = dict(overrides.get(method) or {})
        clash = sorted(set(grid) & set(hparams))
        if clash:
            raise PlanError(
                f"experiments.{exp_name}.hparams.{method}: {clash} fixed here and searched by "
                f"selection.grids.{method}; keep one"
            )
        _check_merge_hparams(exp_name, method, hparams, grid)
        name = N.seeded(method, tag)
        spec = {"method": method, "hparams": hparams, "seed": seed, "experts": experts, "variant": name}
        if grid:
            spec["selection"] = {"grid": grid, "metric": metric, "split": "dev"}
        plan.variants[(exp_name, name)] = spec
        label = labels.get(method, method)
        row = {"model": N.merge_model(name), "label": label, "group": "merge", "method": method}
        if grid:
            row["selected_on"] = "dev"
        rows.append(row)
        if grid and method in default_rows:
            variant = N.seeded(N.default_variant(method), tag)
            plan.variants[(exp_name, variant)] = {
                "method": method, "hparams": hparams, "seed": seed, "experts": experts, "variant": variant,
            }  # fmt: skip
            rows.append(
                {
                    "model": N.merge_model(variant),
                    "label": f"{label} (paper default)",
                    "group": "merge",
                    "method": method,
                }
            )
    seen_sweeps: dict[tuple[str, str], int] = {}
    for k, sweep in enumerate(exp.get("sweeps", [])):
        method, param = sweep["method"], sweep["param"]
        if (method, param) in seen_sweeps:
            raise PlanError(
                f"config key 'experiments.{exp_name}.sweeps[{k}]': sweeps[{seen_sweeps[(method, param)]}] already "
                f"sweeps {method}.{param}; give all its values in one sweep"
            )
        seen_sweeps[(method, param)] = k
        _check_distinct(sweep["values"], f"experiments.{exp_name}.sweeps[{k}] ({param})")
        points = []
        for value in sweep["values"]:
            variant = N.seeded(N.variant(method, param, value), tag)
            hparams = {**dict(overrides.get(method) or {}), param: value}
            plan.variants[(exp_name, variant)] = {
                "method": method,
                "hparams": hparams,
                "seed": seed,
                "experts": experts,
                "variant": variant,
            }
            points.append({"value": value, "model": N.merge_model(variant)})
        sweeps.append({"method": method, "param": param, "points": points})
    return rows, sweeps
