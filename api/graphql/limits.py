"""What one GraphQL document may ask of the node, checked before anything runs.

Each limit is a setting (docs/configuration.md, docs/graphql.md#limits): a
document over one is refused as a whole with a validation error
(``extensions.code = "GRAPHQL_VALIDATION_FAILED"``) naming the limit, and no
resolver runs. Page sizes are capped in relay.py (``first`` at most
MAX_PAGE_SIZE, as REST's ``limit``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from dicom_node.settings import Settings


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions that enforce the settings' limits (factories:
    strawberry makes one of each per operation)."""
    return [
        partial(MaxTokensLimiter, max_token_count=settings.graphql_max_tokens),
        partial(MaxAliasesLimiter, max_alias_count=settings.graphql_max_aliases),
        partial(QueryDepthLimiter, max_depth=settings.graphql_max_depth),
    ]
