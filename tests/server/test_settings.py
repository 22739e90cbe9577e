"""Server settings: every knob is a documented field that ``TOOLGYM_*`` variables can set."""

from __future__ import annotations

import dataclasses

from toolgym.server.settings import Settings

# A value for each field type, different from every default.
SAMPLES = {"str": "sample", "str | None": "sample", "int": "7", "float": "2.5", "bool": "true",
           "tuple[str, ...]": "a,b", "BackendName": "process"}
EXPECTED = {"str": "sample", "str | None": "sample", "int": 7, "float": 2.5, "bool": True,
            "tuple[str, ...]": ("a", "b"), "BackendName": "process"}


def test_every_setting_can_be_set_from_the_environment() -> None:
    """A field the environment cannot reach is a knob no deployment can turn: remove it."""
    for f in dataclasses.fields(Settings):
        hint = str(f.type)
        assert hint in SAMPLES, f"Settings.{f.name} has a type ({hint}) TOOLGYM_{f.name.upper()} cannot carry"
        raw, expected = SAMPLES[hint], EXPECTED[hint]
        if hint == "bool" and f.default is True:
            raw, expected = "false", False
        settings = Settings.from_env({f"TOOLGYM_{f.name.upper()}": raw})
        assert getattr(settings, f.name) == expected, f.name
        assert getattr(settings, f.name) != getattr(Settings(), f.name), f.name
