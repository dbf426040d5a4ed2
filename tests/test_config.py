"""Settings: each default written once, in the schema; the library's dataclasses read theirs from it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from rlseg.config import SCHEMA, defaults
from rlseg.multiclass import MultiClassConfig
from rlseg.schedule import SingleClassConfig
from rlseg.synthetic import WorldSpec

SRC = Path(__file__).resolve().parents[1] / "src" / "rlseg"
SECTIONS = [(SingleClassConfig, "single_class", "schedule.py"), (MultiClassConfig, "multiclass", "multiclass.py"),
            (WorldSpec, "synthetic", "synthetic.py")]


@pytest.mark.parametrize(("cls", "section", "module"), SECTIONS, ids=[s for _, s, _ in SECTIONS])
def test_dataclass_defaults_are_the_schema_defaults_and_written_only_there(cls, section, module):
    schema = defaults(section)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in schema.items():
        if name not in fields:
            continue
        f = fields[name]
        got = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert got == value, f"{section}.{name}: dataclass {got!r}, schema {value!r}"
    # in the source, every field that is a schema key takes its default from the schema, not from a literal
    tree = ast.parse((SRC / module).read_text())
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    for node in body:
        if isinstance(node, ast.AnnAssign) and node.target.id in schema:
            assert any(isinstance(c, ast.Subscript) for c in ast.walk(node.value)), \
                f"{module}: {cls.__name__}.{node.target.id} does not read the schema's default"


def test_every_section_default_validates_against_the_schema():
    import jsonschema

    full = yaml.safe_load(SCHEMA.read_text())
    for section, spec in full["properties"].items():
        if spec.get("type") == "object" and "properties" in spec:
            jsonschema.validate(defaults(section), spec)


def test_image_checks_share_one_minimum_side():
    from rlseg import crawl, imageio, ingest

    images = defaults("images")
    assert imageio.MIN_SIDE == crawl.CheckedDownloader.min_side == images["min_side"]
    assert imageio.MAX_PIXELS == crawl.CheckedDownloader.max_pixels == images["max_pixels"]
    import inspect

    assert inspect.signature(ingest.check_files).parameters["min_side"].default == images["min_side"]


def test_every_key_of_the_paper_config_is_explained_in_the_paper_doc():
    section = (SRC.parents[1] / "docs" / "paper.md").read_text()
    paper = yaml.safe_load((SRC.parents[1] / "configs" / "paper.yaml").read_text())
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for top, value in paper.items():
        keys = [f"{top}.{k}" for k in value] if isinstance(value, dict) else [top]
        for key in keys:
            *parent, leaf = key.split(".")
            # a row names the key in full, or its section's first key in full and this one by its own name
            assert any(f"`{key}`" in r or (parent and f"`{parent[0]}." in r and f"`{leaf}`" in r) for r in rows), key
