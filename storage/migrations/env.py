"""Alembic environment: runs on the connection ``storage.database.Database.migrate`` hands over."""
from alembic import context

from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - iseg always migrates through Database.migrate
    raise RuntimeError("run migrations through storage.Database (it passes its connection to Alembic)")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
