"""The committed SDL of the GraphQL schema (``api/graphql/schema.graphql``).

``python -m api.graphql.sdl`` writes it from the schema as the node builds it
(default settings: the limits are not part of the SDL); ``--check`` writes
nothing and exits 1 with a diff when the committed file differs, as CI and
tests/api/graphql/test_sdl.py do. The file is the schema's review copy (a
change to any field shows in the diff) and what clients generate code from
without introspecting a running node.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from strawberry.printer import print_schema

from api.graphql.schema import build_schema
from dicom_node.settings import Settings

SDL_PATH = Path(__file__).with_name("schema.graphql")


def current_sdl() -> str:
    """The schema's SDL as this code builds it, ending with a newline."""
    return print_schema(build_schema(Settings())).rstrip("\n") + "\n"


def difference(committed: str, current: str) -> str:
    """A unified diff from the committed SDL to the current one ('' when equal)."""
    return "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=f"{SDL_PATH.name} (committed)",
            tofile=f"{SDL_PATH.name} (the code's)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.graphql.sdl", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="compare only: exit 1 with a diff when they differ"
    )
    args = parser.parse_args(argv)
    current = current_sdl()
    if args.check:
        committed = SDL_PATH.read_text(encoding="utf-8") if SDL_PATH.exists() else ""
        diff = difference(committed, current)
        if diff:
            sys.stdout.write(diff)
            sys.stdout.write(f"\n{SDL_PATH} is stale: run python -m api.graphql.sdl\n")
            return 1
        return 0
    SDL_PATH.write_text(current, encoding="utf-8")
    sys.stdout.write(f"wrote {SDL_PATH}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
