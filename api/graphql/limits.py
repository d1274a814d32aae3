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
A plain list (not a connection) counts as one item: the schema's unpaged lists
are short by design (a report's versions, a study's series summary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from api.graphql.relay import DEFAULT_PAGE_SIZE
from dicom_node.settings import Settings

# the argument that makes a field a page of many (relay.py: every connection has it)
PAGE_ARGUMENT = "first"


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

    def page_size(self, node: FieldNode, definition: GraphQLField | None) -> int:
        """How many nodes a connection field's page holds at most (1 for any
        other field): its ``first``, from the document or a variable."""
        if definition is None or PAGE_ARGUMENT not in definition.args:
            return 1
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
                nodes = self.page_size(selection, definition)
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


def complexity_rule(limit: int, variables: Mapping[str, Any]) -> type[ASTValidationRule]:
    """A validation rule refusing an operation whose ``estimate`` is over ``limit``."""

    class ComplexityLimit(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            fragments = {
                node.name.value: node
                for node in document.definitions
                if isinstance(node, FragmentDefinitionNode)
            }
            for node in document.definitions:
                if not isinstance(node, OperationDefinitionNode):
                    continue
                cost = estimate(context.schema, node, fragments, variables)
                if cost > limit:
                    name = f"'{node.name.value}' " if node.name else ""
                    context.report_error(
                        GraphQLError(
                            f"operation {name}is too complex: an estimated {cost} fields "
                            f"(each field once per node of the pages it is under), at "
                            f"most {limit}: ask for smaller pages or fewer fields",
                            node,
                        )
                    )

    return ComplexityLimit


class ComplexityLimiter(AddValidationRules):
    """``complexity_rule`` with the operation's variables (a page size may be
    one). So the rule's verdict depends on more than the document: strawberry's
    ValidationCache (validation results cached by document) must not be added."""

    def __init__(self, max_complexity: int) -> None:
        super().__init__([])
        self.max_complexity = max_complexity

    def on_operation(self) -> Iterator[None]:
        variables = self.execution_context.variables or {}
        self.validation_rules = [complexity_rule(self.max_complexity, variables)]
        yield from super().on_operation()


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions that enforce the settings' limits (factories:
    strawberry makes one of each per operation)."""
    return [
        partial(MaxTokensLimiter, max_token_count=settings.graphql_max_tokens),
        partial(MaxAliasesLimiter, max_alias_count=settings.graphql_max_aliases),
        partial(QueryDepthLimiter, max_depth=settings.graphql_max_depth),
        partial(ComplexityLimiter, max_complexity=settings.graphql_max_complexity),
    ]
