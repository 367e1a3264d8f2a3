"""`pip install .`: dependencies declared once (requirements.txt repeats them for Spaces) and the README's notebook
lines, run exactly as the README shows them."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-r")]


def test_requirements_txt_repeats_the_dependencies_of_pyproject():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert sorted(project["dependencies"]) == sorted(_requirement_lines(PROJECT_ROOT / "requirements.txt"))
    assert project["scripts"]["tvr-demo"] == "tvr_demo.__main__:main"


def test_every_bundled_file_is_in_the_package_data():
    """What paths.py looks for after `pip install .` is listed in pyproject.toml's data-files."""
    files = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    listed = {p for patterns in files.values() for pattern in patterns for p in PROJECT_ROOT.glob(pattern)}
    bundled = {p for folder in ("checkpoints", "assets") for p in (PROJECT_ROOT / folder).rglob("*") if p.is_file()}
    assert bundled and bundled == listed


def notebook_lines() -> list[str]:
    """The python block of the README's "In a notebook" section, line by line."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In a notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1).splitlines()


def test_the_readme_notebook_lines_search_and_explain(tmp_path, monkeypatch):
    """The README's lines, exactly, on the bundled drl-wti checkpoint and a small bundled-style gallery: the explained
    pair is the top hit, its score is the search's, and its pieces add up to it."""
    from tvr_demo.data import synthetic

    monkeypatch.setenv("TVR_DEMO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TVR_DEMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "SyntheticConfig", functools.partial(synthetic.SyntheticConfig, n_train=4,
                                                                       n_val=2, n_test=12))
    lines = notebook_lines()
    assert len([line for line in lines if line and not line.startswith("import")]) == 3
    namespace: dict = {}
    exec(compile("\n".join(lines), "README.md", "exec"), namespace)
    engine, result, why = namespace["engine"], namespace["result"], namespace["why"]
    assert engine.gallery_size == 12 and len(result.hits) == 5
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert why.video_index == result.hits[0].index
    assert why.scores["latent"] == pytest.approx(result.hits[0].score, abs=1e-4)
    latent = why.latent
    assert latent.token_contrib.sum() == pytest.approx(latent.t2v, abs=1e-4)
    assert (latent.t2v + latent.v2t) / 2 == pytest.approx(result.hits[0].score, abs=1e-4)
