"""The README opens with the two commands CI and newcomers rely on."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("```")[1].splitlines()[1:]
    assert len(block) == 2
    assert block[0].endswith("examples/demo.py")
    assert "pytest" in block[1]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_gitignore_template_is_the_packaged_one() -> None:
    template = (ROOT / ".gitignore-template").read_text()
    assert template == (ROOT / "orc_git" / "templates" / "gitignore").read_text()
    assert ".orc/tasks/*/lock.yaml" in template
