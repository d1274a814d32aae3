"""The committed SDL (api/graphql/schema.graphql) is the schema the code builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.graphql import sdl


def test_the_committed_sdl_is_the_schema_of_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    # on failure the diff is in the output: run python -m api.graphql.sdl
    assert sdl.main(["--check"]) == 0, capsys.readouterr().out
    assert sdl.SDL_PATH.read_text(encoding="utf-8") == sdl.current_sdl()


def test_check_exits_1_with_a_diff_for_a_stale_file_and_writing_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "schema.graphql"
    current = sdl.current_sdl()
    stale.write_text(current.replace("  me: User!\n", ""), encoding="utf-8")
    monkeypatch.setattr(sdl, "SDL_PATH", stale)

    assert sdl.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "+  me: User!" in out and "is stale" in out

    assert sdl.main([]) == 0
    assert stale.read_text(encoding="utf-8") == current
    assert sdl.main(["--check"]) == 0
