"""The settings schema: every setting documented, checked and read by the code; docs/configuration.md generated
from it and equal to what it generates now."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from dlrm_bench import settings as schema
from dlrm_bench.errors import UserError
from dlrm_bench.settings import FIELDS, Settings

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def test_every_setting_has_a_group_a_doc_and_a_check_that_accepts_its_default() -> None:
    for name, field in FIELDS.items():
        meta = field.metadata
        assert meta["group"] in schema.GROUPS and meta["doc"].strip() and meta["check"].expected, name
        assert meta["check"].accepts(field.default), name


def test_settings_are_frozen_and_with_values_returns_a_copy() -> None:
    base = Settings()
    changed = base.with_values({"batch_size": 4}, "test")
    assert (base.batch_size, changed.batch_size) == (16384, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.batch_size = 3  # type: ignore[misc]
    assert Settings.from_dict(changed.as_dict()) == changed


def test_an_unknown_name_is_refused_with_the_closest() -> None:
    with pytest.raises(UserError, match=r"here: unknown setting 'gpu_bach_size' \(did you mean 'gpu_batch_size'\?\)"):
        Settings().with_values({"gpu_bach_size": 1}, "here")


def test_every_setting_is_read_by_the_code() -> None:
    """A setting nothing reads is a dead option: each name appears as `.name` somewhere in src/ but settings.py."""
    sources = "\n".join(p.read_text() for p in (REPO / "src" / "dlrm_bench").rglob("*.py")
                        if p.name != "settings.py")
    unread = [name for name in FIELDS if not re.search(rf"\.{name}\b", sources)]
    assert not unread, f"settings no code reads: {unread}"


def test_configuration_md_is_generated_from_the_schema() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    assert BEGIN in text and END in text, "docs/configuration.md lost its settings markers"
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == schema.markdown().strip(), "docs/configuration.md is stale: run `make docs`"
