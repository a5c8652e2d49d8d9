"""What an experiment kind is, and the registry that finds one by name.

An experiment kind (``multilingual``, ``domains``, ``peft``, ``merge-study``) is one module in
this package holding one ``ExperimentKind`` subclass, decorated with ``@register``. It owns:

* ``plan(plan, name, exp)``: what the experiment trains or imports, merges and evaluates (it
  fills the ``Plan`` through ``speechmerge.plan``'s helpers) and its ``ReportSpec``;
* ``layout``: the columns, notes and extra tables of its report (a ``report.layouts.Layout``);
* ``selection_metric``: how a merge's hyperparameters are chosen on dev when the config does
  not say (``np`` or ``mean_error``);
* ``claims``: the headline claims of its paper (``report.claims.ClaimDef``; none for a study of
  the user's own experts) and ``claims_doc``: what ``docs/claims.md`` says about them.

``register`` checks the metadata when the module is imported, so a kind with a missing label, an
unknown selection metric or a layout of another kind fails at once, naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

SELECTION_METRICS = ("np", "mean_error")

#: name -> kind class, filled by ``@register`` (importing ``speechmerge.experiments`` imports every kind).
KINDS: dict[str, type["ExperimentKind"]] = {}


@dataclass
class ReportSpec:
    """What the report of one experiment needs: the rows and test sets of its tables, the
    reference and baseline rows, and how its numbers were made. ``fields``: the keys only this
    kind has (the domains kind's out-of-domain and retention subsets, the peft kind's methods),
    typed by the kind (a dataclass); ``as_dict`` is what the report rule receives."""

    experiment: str
    kind: str
    subsets: list[str]
    tasks: list[str]
    rows: list[dict]
    normalise_to: str | None = None
    sweeps: list[dict] = field(default_factory=list)
    sequential: list[dict] = field(default_factory=list)
    experts: dict[str, str] = field(default_factory=dict)
    expert_testsets: dict[str, list[str]] = field(default_factory=dict)
    baseline_for_significance: str | None = None
    fields: Any = None
    # filled by build_plan once every variant of the experiment exists
    default_merges: dict[str, dict] = field(default_factory=dict)
    default_models: dict[str, str] = field(default_factory=dict)
    context_s: float | None = None
    bootstrap: int = 1000
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    selection: str = ""

    def as_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "fields"}
        if self.fields is not None:
            out.update(asdict(self.fields))
        return out


class ExperimentKind:
    """One experiment kind (see the module docstring). Subclasses set the class attributes and
    implement ``plan``."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # what it stands for, one line (list-kinds, docs)
    paper: ClassVar[str | None] = None  # the paper it regenerates (None: the user's own study)
    selection_metric: ClassVar[str] = "mean_error"
    trains: ClassVar[bool] = True  # trains its models (once per training seed); False: takes them as given
    layout: ClassVar[Any] = None  # a report.layouts.Layout instance of this kind
    claims: ClassVar[tuple] = ()  # report.claims.ClaimDef of the paper's headline claims
    claims_doc: ClassVar[str] = ""  # docs/claims.md's section on them (Markdown after the table)

    def plan(self, plan, name: str, exp: dict) -> ReportSpec:  # pragma: no cover - abstract
        raise NotImplementedError


def register(cls: type[ExperimentKind]) -> type[ExperimentKind]:
    """Class decorator: check the kind's metadata and add it to ``KINDS``."""
    where = f"experiment kind {cls.__module__}.{cls.__name__}"
    if not cls.name or not cls.label:
        raise TypeError(f"{where}: needs a name and a label")
    if cls.name in KINDS and KINDS[cls.name] is not cls:
        raise TypeError(f"{where}: name {cls.name!r} is already registered by {KINDS[cls.name].__module__}")
    if cls.selection_metric not in SELECTION_METRICS:
        raise TypeError(f"{where}: selection_metric {cls.selection_metric!r} is not one of {SELECTION_METRICS}")
    if cls.layout is None or getattr(cls.layout, "kind", None) != cls.name:
        raise TypeError(f"{where}: its layout must be a Layout whose kind is {cls.name!r}")
    for claim in cls.claims:
        if claim.kind != cls.name:
            raise TypeError(f"{where}: claim {claim.id!r} belongs to kind {claim.kind!r}")
    if cls.claims and not cls.paper:
        raise TypeError(f"{where}: claims need the paper they come from")
    KINDS[cls.name] = cls
    return cls


def get_kind(name: str) -> ExperimentKind:
    """The kind called ``name`` (an instance); a ``KeyError`` naming the known kinds otherwise."""
    import speechmerge.experiments  # noqa: F401  (imports register every kind)

    if name not in KINDS:
        raise KeyError(f"unknown experiment kind {name!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[name]()


def all_kinds() -> list[ExperimentKind]:
    import speechmerge.experiments  # noqa: F401

    return [KINDS[name]() for name in KINDS]
