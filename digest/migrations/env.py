"""Alembic environment: runs on the connection digest.db hands over."""

from alembic import context
from sqlalchemy import create_engine

from digest.models import Base

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # `alembic` command line, for writing new migrations: alembic -x url=sqlite:///x.db
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///subscribers.db")
    with create_engine(url).begin() as conn:
        _run(conn)
