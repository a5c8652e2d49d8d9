"""The config schema and the corpus are package data read through importlib.resources, and the
explicit package list of pyproject.toml names every package directory."""

from importlib.resources import files
from pathlib import Path

import pytest
import tomllib

from speechmerge.config import CORPUS, DEFAULT_CORPUS, SCHEMA, ConfigError, corpus_path

ROOT = Path(__file__).resolve().parents[1]


def test_schema_and_corpus_are_package_data_with_the_repository_content():
    assert (files("speechmerge.schemas") / "config.schema.yaml").read_bytes() == (
        ROOT / "schemas" / "config.schema.yaml"
    ).read_bytes()
    assert (files("speechmerge.corpus") / "corpus.tsv").read_bytes() == (
        ROOT / "resources" / "text" / "corpus.tsv"
    ).read_bytes()
    assert SCHEMA.is_file() and CORPUS.is_file()


def test_pyproject_lists_every_package_directory():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(meta["package-dir"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "speechmerge").rglob("__init__.py")}
    assert set(meta["packages"]) == on_disk | mapped
    for package, directory in meta["package-dir"].items():
        for pattern in meta["package-data"][package]:
            assert list((ROOT / directory).glob(pattern)), f"{package}: nothing matches {pattern} in {directory}"


def test_corpus_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert corpus_path(DEFAULT_CORPUS) == str(CORPUS)  # not in the working directory
    assert corpus_path(None) == str(CORPUS)
    own = tmp_path / "resources" / "text" / "corpus.tsv"
    own.parent.mkdir(parents=True)
    own.write_text("x")
    assert corpus_path(DEFAULT_CORPUS) == DEFAULT_CORPUS  # the user's own copy wins
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "mine.tsv").write_text("x")
    assert corpus_path("mine.tsv", tmp_path / "wf") == str(tmp_path / "wf" / "mine.tsv")
    with pytest.raises(ConfigError, match="corpus: 'nope.tsv' does not exist"):
        corpus_path("nope.tsv", tmp_path / "wf")


def test_missing_package_data_names_the_package_and_the_fix(monkeypatch):
    import speechmerge.config as C

    def missing(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(C, "files", missing)
    with pytest.raises(ModuleNotFoundError, match=r"speechmerge\.schemas .*config\.schema\.yaml.*make env"):
        C._package_data("speechmerge.schemas", "config.schema.yaml")


def test_architecture_lists_every_module():
    """docs/ARCHITECTURE.md names every module of the library (by file name in its folder's block)."""
    from speechmerge.config import ROOT

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    layout = text[text.index("## Layout") : text.index("## Paths")]
    missing = []
    for path in sorted((ROOT / "speechmerge").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name != "speechmerge":
            continue
        if path.parent.name == "methods":  # one per merge method: methods/*.py
            continue
        if path.name not in layout:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"docs/ARCHITECTURE.md does not list {missing}"
