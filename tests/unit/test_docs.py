"""The documentation cannot drift from the code: settings tables are rendered from Settings."""

from __future__ import annotations

from pathlib import Path

from qastream.settings import render_env_file, render_markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_setting_with_its_default():
    assert render_markdown_table() in (ROOT / "README.md").read_text()


def test_config_defaults_file_is_current():
    assert (ROOT / "config" / "defaults.env").read_text().strip() == render_env_file().strip()


def test_readme_test_command_is_what_ci_runs():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_code_map_names_every_package_and_top_level_module():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Code map")
    code_map = readme[start:readme.index("\n## ", start)]
    package = ROOT / "qastream"
    names = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    missing = sorted(n for n in names if f"`qastream/{n}/`" not in code_map)
    missing += sorted(m for m in modules if m not in code_map)
    assert not missing, f"README code map does not mention {missing}"
