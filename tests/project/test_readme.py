"""The README tells the truth about configuration: every setting is documented."""

from __future__ import annotations

from pathlib import Path

from leadpush.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    missing = [f"LEADPUSH_{name.upper()}" for name in Settings.model_fields if f"LEADPUSH_{name.upper()}" not in README]
    assert missing == []


def test_readme_names_the_two_commands():
    assert "make run" in README and "make test" in README


def test_every_linked_file_exists():
    import re

    root = Path(__file__).resolve().parents[2]
    links = re.findall(r"\]\(((?:docs|clients|deploy)/[^)#]+)\)", README)
    assert links, "the README links its docs"
    missing = [link for link in links if not (root / link).exists()]
    assert missing == []
