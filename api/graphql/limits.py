"""What one GraphQL document may ask of the node, checked before anything runs.

Each limit is a setting (docs/configuration.md, docs/graphql.md#limits): a
document over one is refused as a whole with a validation error
(``extensions.code = "GRAPHQL_VALIDATION_FAILED"``) naming the limit, and no
resolver runs. Page sizes are capped in relay.py (``first`` at most
MAX_PAGE_SIZE, as REST's ``limit``).

The tokens, aliases and depth limits bound the work of parsing and the shape
of a document; none bounds how many records it asks for: ten nested
connections of 500 each are shallow and short. The complexity limit does: it
estimates the fields the answer holds (``estimate``), each field counting 1
for every time it appears in the answer, so fields under a connection count
once per node of its page (``first``, DEFAULT_PAGE_SIZE when not given).
A plain list (not a connection's page) counts as LIST_ESTIMATE (10) items: the
schema's unpaged lists are short in practice (a study's series, a report's
versions), but not bounded, and they nest (a patient's studies' patient's
studies...): counted as one, a shallow document could ask for millions.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from functools import lru_cache, partial
from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    Visitor,
    get_named_type,
    get_nullable_type,
    parse,
    value_from_ast_untyped,
    visit,
)
from strawberry.extensions import (
    MaxAliasesLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.schema import validate_document

from api.graphql.relay import DEFAULT_PAGE_SIZE
from dicom_node.settings import Settings

# the argument that makes a field a page of many (relay.py: every connection has it)
PAGE_ARGUMENT = "first"
# how many items a plain list field counts for (see the module's docstring): a
# study's series, a patient's studies, a report's versions are ten or so
LIST_ESTIMATE = 10
# the types relay.Connection makes: ImagingRequestConnection, WorklistItemConnection...
CONNECTION_SUFFIX = "Connection"
# documents (and page sizes of a document) remembered: a few clients' queries
CACHE_SIZE = 256


class _Estimate:
    """The cost of one operation under ``schema`` with ``variables``."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def page_size(
        self, node: FieldNode, definition: GraphQLField | None, parent: GraphQLNamedType | None
    ) -> int:
        """How many nodes a connection field's page holds at most: its
        ``first``, from the document or a variable; LIST_ESTIMATE for a plain
        list (a connection's own ``edges`` are its page, counted at the
        connection); 1 for any other field."""
        if definition is None:
            return 1
        if PAGE_ARGUMENT not in definition.args:
            listed = isinstance(get_nullable_type(definition.type), GraphQLList)
            # a connection's edges are its page; the introspection types'
            # lists are as long as the schema is, the same for every caller
            bounded = parent is not None and (
                parent.name.endswith(CONNECTION_SUFFIX) or parent.name.startswith("__")
            )
            return LIST_ESTIMATE if listed and not bounded else 1
        for argument in node.arguments or ():
            if argument.name.value != PAGE_ARGUMENT:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(int(value.value), 0)
            if isinstance(value, VariableNode):
                given = self.variables.get(value.name.value)
                if isinstance(given, int) and not isinstance(given, bool):
                    return max(given, 0)
            # null, or a variable not given: the default page
            return DEFAULT_PAGE_SIZE
        default = definition.args[PAGE_ARGUMENT].default_value
        return default if isinstance(default, int) and default > 0 else DEFAULT_PAGE_SIZE

    def of(
        self,
        selections: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        seen: frozenset[str] = frozenset(),
    ) -> int:
        """The cost of ``selections`` on one object of type ``parent`` (None:
        an introspection type or one unknown; its fields count 1 each)."""
        if selections is None:
            return 0
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                definition = None
                if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
                    definition = parent.fields.get(selection.name.value)
                child = get_named_type(definition.type) if definition is not None else None
                nodes = self.page_size(selection, definition, parent)
                total += 1 + nodes * self.of(selection.selection_set, child, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                narrowed = self.schema.get_type(condition.name.value) if condition else parent
                total += self.of(selection.selection_set, narrowed, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                # an unknown or cyclic spread is refused by graphql-core's own rules
                if fragment is None or name in seen:
                    continue
                narrowed = self.schema.get_type(fragment.type_condition.name.value)
                total += self.of(fragment.selection_set, narrowed, seen | {name})
        return total


def estimate(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The estimated cost of ``operation``: every field 1, times the page
    sizes of the connections it is under."""
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    # a variable not given takes its default from the operation: $first: Int = 500
    given = dict(variables or {})
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in given and definition.default_value is not None:
            given[name] = value_from_ast_untyped(definition.default_value)
    return _Estimate(schema, fragments, given).of(operation.selection_set, root)


def page_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables a ``first`` argument takes anywhere in ``document``: the
    only variables ``estimate`` reads (a superset is harmless: a cache key)."""
    names: dict[str, None] = {}

    class Collect(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: object) -> None:
            if node.name.value == PAGE_ARGUMENT and isinstance(node.value, VariableNode):
                names[node.value.name.value] = None

    visit(document, Collect())
    return tuple(names)


# how a page variable counts in ``estimate``: not given (the operation's
# default applies), an int, or anything else (the default page)
_NOT_GIVEN = "not given"
_OTHER = "other"


def _page_value(variables: Mapping[str, Any], name: str) -> int | str:
    if name not in variables:
        return _NOT_GIVEN
    value = variables[name]
    return value if isinstance(value, int) and not isinstance(value, bool) else _OTHER


class _Lru:
    """A small bounded mapping, least recently used out first (thread-safe:
    the subscription and test loops may run in other threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        with self.lock:
            value = self.entries.get(key)
            if value is not None:
                self.entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


# the parse of a document text does not depend on the schema: one cache for
# the process (as strawberry's ParserCache), also used by the router to tell
# a subscription (router.py). A document that does not parse raises, and is
# not cached.
parse_document = lru_cache(maxsize=CACHE_SIZE)(parse)


def _copy(error: GraphQLError) -> GraphQLError:
    """A fresh error of a cached one: the errors of an answer are formatted
    (and may be annotated) per answer."""
    return GraphQLError(
        error.message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        error.original_error,
        error.extensions,
    )


class DocumentChecks:
    """The limits of one schema's settings, with what can be kept between
    requests: a client sends the same few documents again and again (the
    worklist page every second), and walking each one for graphql-core's
    rules, the depth and alias limits and the estimate is most of the cost of
    a small answer.

    - parse: by the text and the token limit (``parse_document``);
    - validation (graphql-core's rules, strawberry's, depth and aliases): by
      the text, under this schema; the verdict depends on nothing else;
    - complexity: depends on the variables too (a ``first`` may be one), so
      it is computed per (text, the values of the document's page variables
      only): a poller sending the same variables hits the cache; another
      ``first`` costs one walk, as without the cache.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_tokens = settings.graphql_max_tokens
        self.max_complexity = settings.graphql_max_complexity
        # strawberry's limiters make their rule class when constructed: made
        # once here, so the rules (and the cache key) are the same each request
        self.rules: tuple[type[ASTValidationRule], ...] = (
            *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
            *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        )
        self.validated = _Lru(CACHE_SIZE)
        self.costs = _Lru(CACHE_SIZE)

    def errors(
        self,
        schema: GraphQLSchema,
        text: str,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
        variables: Mapping[str, Any],
    ) -> list[GraphQLError]:
        """Every validation error of ``document`` (``text`` parsed), the
        complexity limit's last."""
        key = (schema, text, rules)
        found: tuple[tuple[GraphQLError, ...], tuple[str, ...]] | None = self.validated.get(key)
        if found is None:
            errors = validate_document(schema, document, (*rules, *self.rules))
            found = (tuple(errors), page_variables(document))
            self.validated.put(key, found)
        static, names = found
        return [_copy(error) for error in static] + self.complexity_errors(
            schema, text, document, names, variables
        )

    def complexity_errors(
        self,
        schema: GraphQLSchema,
        text: str,
        document: DocumentNode,
        names: tuple[str, ...],
        variables: Mapping[str, Any],
    ) -> list[GraphQLError]:
        key = (schema, text, tuple(_page_value(variables, name) for name in names))
        costs: list[tuple[OperationDefinitionNode, int]] | None = self.costs.get(key)
        if costs is None:
            fragments = {
                node.name.value: node
                for node in document.definitions
                if isinstance(node, FragmentDefinitionNode)
            }
            costs = [
                (node, estimate(schema, node, fragments, variables))
                for node in document.definitions
                if isinstance(node, OperationDefinitionNode)
            ]
            self.costs.put(key, costs)
        return [
            complexity_error(node, cost, self.max_complexity)
            for node, cost in costs
            if cost > self.max_complexity
        ]


def complexity_error(node: OperationDefinitionNode, cost: int, limit: int) -> GraphQLError:
    name = f"'{node.name.value}' " if node.name else ""
    return GraphQLError(
        f"operation {name}is too complex: an estimated {cost} fields "
        f"(each field once per node of the pages it is under), at "
        f"most {limit}: ask for smaller pages or fewer fields",
        node,
    )


class DocumentLimits(SchemaExtension):
    """The limits (``DocumentChecks``) on one operation: the token limit on
    the parse, the others with validation, both from the checks' caches.
    Strawberry skips its own parse and validation when an extension has
    done them (a document is set, pre-execution errors are set)."""

    def __init__(self, checks: DocumentChecks) -> None:
        self.checks = checks

    def on_operation(self) -> Iterator[None]:
        # for strawberry's own parse, when ours did not (a document over the
        # token limit or not GraphQL: it reports that error as usual)
        self.execution_context.parse_options["max_tokens"] = self.checks.max_tokens
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            # a refused parse raised here would escape strawberry's handling
            with contextlib.suppress(GraphQLError):
                context.graphql_document = parse_document(
                    context.query, max_tokens=self.checks.max_tokens
                )
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.query is not None and document is not None:
            context.pre_execution_errors = self.checks.errors(
                context.schema._schema,
                context.query,
                document,
                context.validation_rules,
                context.variables or {},
            )
        yield


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions that enforce the settings' limits (factories:
    strawberry makes one of each per operation; the caches are the schema's)."""
    checks = DocumentChecks(settings)
    return [partial(DocumentLimits, checks)]
