"""The GraphQL API (``/graphql``): the same services, permission table, audit
events and visibility rule as REST, as one graph (docs/graphql.md)."""
