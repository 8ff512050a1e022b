"""The docs that are generated from code must match the code."""

from clusterserve import arbiter_lifecycle, worker_lifecycle
from clusterserve.config import reference
from tests.harness import ROOT


def test_generated_settings_docs_are_current():
    for filename, renderer in reference.DOCS.items():
        current = (ROOT / "docs" / filename).read_text()
        assert current == renderer(current), f"docs/{filename} is stale: run python -m clusterserve.config.reference"


def test_readme_opens_with_the_two_quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in quickstart.splitlines() if line.startswith((".venv", "python3", "bash"))]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/clusterserve examples.hello:app -w 4",
        "bash .ci/run",
    ]


def test_ci_runs_the_whole_suite_with_the_test_extra():
    script = (ROOT / ".ci" / "run").read_text()
    assert "pip install" in script and "-e '.[test]'" in script
    assert "-m pytest" in script


def test_license_file_is_the_mit_license_pyproject_names():
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_the_state_tables_in_the_architecture_notes_are_the_code_s():
    notes = (ROOT / "docs" / "architecture.md").read_text()
    assert arbiter_lifecycle.render() in notes
    assert worker_lifecycle.render() in notes
