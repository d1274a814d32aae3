"""How a GraphQL listing is audited (``audited_page``, ``audit_listing``: as
its REST route), and the worklist page's answer, reused while the change feed
has not moved, as REST's page is (api/cache.py), its listing audit replayed.

Workstations poll the worklist; REST answers a repeated listing from a cache
that the change feed invalidates (any claim, release, new item or report
change moves it, in the same transaction) and that lives at most a second.
A GraphQL page costs the executor a field's work for every field of every item
(~2,000 for a page of 50 with its study, order, patient and report), so the
same poll would cost several times REST's. Here a query whose only root field
is ``worklist`` is answered from the same kind of cache:

- per caller (the Principal: role, lead, API key scopes), address, document
  and variables: what a page shows depends on who asks (permissions refuse
  edges; ``assignedTo: "me"``), and the listing audit is per user and address;
- only an answer without errors, whose operation wrote nothing (a query
  writes only audit events: a report's text read, a study's series viewed...
  are audited every time, so an operation that wrote one is not reused);
- the page's listing audit is replayed on a hit (``audit_listing``): the
  event is written when due, with the repeats counted, exactly as when the
  page is computed. No answer is sent without its audit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from graphql import FieldNode, GraphQLError, OperationType, get_operation_ast
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from api.graphql.context import GraphQLContext, Listing
from api.graphql.limits import parse_document
from api.listing_audit import RepeatedListingAudit, record_listing

# the root fields whose answers may be reused: the polled listing
CACHEABLE_ROOTS = frozenset({"worklist"})


@dataclass(frozen=True)
class CachedAnswer:
    result: ExecutionResult
    listings: tuple[Listing, ...]


async def audit_listing(context: GraphQLContext, listing: Listing) -> None:
    """The listing's Query event, once per interval per user, address and
    query (api/listing_audit.py), with the repeats since the last one."""
    context.trace.listings.append(listing)
    audit: RepeatedListingAudit = context.state.listing_audit
    repeats = audit.due(listing.key)
    if repeats is None:
        return
    try:
        await context.write(record_listing, **listing.record, repeats=repeats)
    except BaseException:
        # no event, no page (as REST): the next listing writes it
        audit.not_written(listing.key, repeats)
        raise


class Page(Protocol):
    """A listing service's page (services/listing.py: Listed, and its kin)."""

    @property
    def total(self) -> int: ...

    @property
    def items(self) -> Sequence[object]: ...


PageT = TypeVar("PageT", bound=Page)


async def audited_page(
    context: GraphQLContext,
    list_page: Callable[..., PageT],
    *,
    narrowed: bool,
    action: str,
    target_class: str,
    query: Mapping[str, Any],
    **arguments: Any,
) -> PageT:
    """A REST listing's page with its Query event, as its REST route makes
    them: narrowed to a patient, the listing service audits the query itself
    (naming the patient) in its own unit of work; otherwise the page is a read
    and one event records ``query`` and the counts (every time: only the
    polled worklist is throttled, ``audit_listing``)."""
    run = context.write if narrowed else context.read
    page = await run(list_page, principal=context.user, source_address=context.address, **arguments)
    if not narrowed:
        await context.write(
            record_listing,
            principal=context.user,
            action=action,
            target_class=target_class,
            query=query,
            matches=page.total,
            returned=len(page.items),
            source_address=context.address,
        )
    return page


def answer_key(
    context: GraphQLContext, request: GraphQLRequestData, max_tokens: int
) -> Hashable | None:
    """The cache key of ``request``'s answer, or None if it may not be reused
    (not a query, another root field than the listing's, a document that
    does not parse: that one is answered by the schema)."""
    if request.query is None:
        return None
    try:
        document = parse_document(request.query, max_tokens=max_tokens)
    except GraphQLError:
        return None  # the schema answers it, uncached
    operation = get_operation_ast(document, request.operation_name)
    if operation is None or operation.operation != OperationType.QUERY:
        return None
    selections = operation.selection_set.selections
    if not all(isinstance(s, FieldNode) and s.name.value in CACHEABLE_ROOTS for s in selections):
        return None
    variables = json.dumps(request.variables or {}, sort_keys=True, default=str)
    return (context.user, context.address, request.query, request.operation_name, variables)
