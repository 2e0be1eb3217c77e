"""``--help`` as a new user reads it: plain argument names and metavars (FILE..., DIR, NAME)
instead of typer's ``{inputs}...`` and ``<list[Path]>``, and a top-level help that names the
options most runs need."""

from __future__ import annotations

import re

import pytest

COMMANDS = [["separate"], ["batch"], ["eval"], ["models"], ["models", "list"],
            ["models", "info"], ["models", "download"], ["models", "verify"],
            ["models", "remove"], ["models", "path"]]


def help_text(capsys, *args: str) -> str:
    from stemsplit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert (exited.value.code or 0) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_names_arguments_and_values_plainly(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "100")
    text = help_text(capsys, *command)
    assert "<list[" not in text and "{inputs}" not in text, text
    assert not re.search(r"\{[A-Za-z_]+\}(\.\.\.)?(\s|$)", text.split("\n", 1)[0]), text
    assert not re.search(r"<(path|list\[[^]]*\])>", text), text


@pytest.mark.parametrize("command,usage", [
    (["separate"], "stemsplit separate [OPTIONS] FILE..."),
    (["batch"], "stemsplit batch [OPTIONS] DIR..."),
    (["eval"], "stemsplit eval [OPTIONS] REFERENCE_DIR [ESTIMATES_DIR]"),
    (["models", "info"], "stemsplit models info [OPTIONS] NAME"),
    (["models", "download"], "stemsplit models download [OPTIONS] [NAME]..."),
    (["models", "path"], "stemsplit models path [OPTIONS] [CACHE]"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_usage_lines(capsys, command, usage):
    text = help_text(capsys, *command)
    assert text.splitlines()[0] == f"Usage: {usage}"
    if command == ["separate"]:
        assert re.search(r"^  FILE\.\.\.\s+Audio or video files", text, re.M)
        for option in ("-n, --name NAME", "-o, --out DIR", "--stems N", "--weights PATH",
                       "-d, --device DEVICE", "--shifts N", "--segment SECONDS",
                       "--clip-mode [rescale|clamp|tanh|none]", "--ensemble ALGORITHM"):
            assert option in text, option


def test_top_level_help_names_the_common_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(capsys)
    for option in ("-n, --name NAME", "-o, --out DIR", "--stems N", "--two-stems STEM",
                   "stemsplit song.mp3", "stemsplit batch", "stemsplit models",
                   "stemsplit eval"):
        assert option in text, option
    assert max(map(len, text.splitlines())) <= 80
