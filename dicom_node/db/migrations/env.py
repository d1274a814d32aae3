"""Alembic environment: online migrations only, one transaction per run."""

from __future__ import annotations

from alembic import context

from dicom_node.db.engine import make_engine
from dicom_node.db.models import Base

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite cannot ALTER most things: alembic's batch mode copies tables
                render_as_batch=connection.dialect.name == "sqlite",
                # SQLite DDL is transactional too: a failed upgrade leaves nothing behind
                transactional_ddl=True,
                transaction_per_migration=False,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations_online()
