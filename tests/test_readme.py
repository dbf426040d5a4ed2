"""The README is for users: short, the two commands first, and every link it gives leads somewhere."""

from __future__ import annotations

import re

from conftest import REPO

README = REPO / "README.md"


def test_readme_is_short_with_the_two_commands_first():
    text = README.read_text()
    assert len(text.encode()) <= 10 * 1024, "README over 10 KB: results and history belong in docs/"
    head = "\n".join(text.splitlines()[:30])
    assert "snakemake --cores 8 results/voc_miou.txt" in head and "pytest" in head


def test_every_local_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    missing = [link for link in links if "://" not in link and not (REPO / link).exists()]
    assert links and not missing, missing
