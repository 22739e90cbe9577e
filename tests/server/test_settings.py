"""Server settings: every knob is a documented field that ``TOOLGYM_*`` variables can set."""

from __future__ import annotations

import dataclasses

from toolgym.server.settings import Settings

# A value for each field type, different from every default.
SAMPLES = {"str": "sample", "str | None": "sample", "int": "7", "float": "2.5", "bool": "true",
           "tuple[str, ...]": "a,b", "BackendName": "process", "IsolationName": "namespace",
           "ChannelName": "attach"}
EXPECTED = {"str": "sample", "str | None": "sample", "int": 7, "float": 2.5, "bool": True,
            "tuple[str, ...]": ("a", "b"), "BackendName": "process", "IsolationName": "namespace",
            "ChannelName": "attach"}


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


def test_isolation_and_backend_must_agree() -> None:
    """``--isolation`` picks the tier; with a backend named too, the two must say the same thing."""
    for backend, isolation in (("auto", "namespace"), ("docker", "namespace"), ("docker", "container"),
                               ("process", "process"), ("auto", "process"), ("process", "")):
        Settings(backend=backend, isolation=isolation).validate()  # type: ignore[arg-type]
    for backend, isolation in (("process", "namespace"), ("process", "container"), ("docker", "process")):
        try:
            Settings(backend=backend, isolation=isolation).validate()  # type: ignore[arg-type]
        except ValueError as exc:
            assert "contradicts" in str(exc), exc
        else:
            raise AssertionError(f"backend={backend} isolation={isolation} was accepted")
    try:
        Settings(isolation="vm").validate()  # type: ignore[arg-type]
    except ValueError as exc:
        assert "container, namespace or process" in str(exc)
    else:
        raise AssertionError("isolation=vm was accepted")


def test_the_sandbox_channel_is_auto_attach_or_socket() -> None:
    """``--sandbox-channel`` / ``TOOLGYM_SANDBOX_CHANNEL``: a misspelt channel is refused at start."""
    for channel in ("auto", "attach", "socket"):
        Settings.from_env({"TOOLGYM_SANDBOX_CHANNEL": channel}).validate()
    try:
        Settings.from_env({"TOOLGYM_SANDBOX_CHANNEL": "sockets"}).validate()
    except ValueError as exc:
        assert "sandbox_channel must be auto, attach or socket" in str(exc), exc
    else:
        raise AssertionError("sandbox_channel=sockets was accepted")
