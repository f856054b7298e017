"""The database behind a store: a URL (``ISEG_DATABASE_URL``), by default a SQLite file in the data folder.

SQLite runs with WAL (readers never block the writer, a killed process loses no committed transaction),
``synchronous=FULL`` (a commit is on disk before it returns), foreign keys on, and every write transaction
opened with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing half-way.
PostgreSQL (``postgresql+psycopg://...``) needs nothing special. The schema is brought to the newest Alembic
revision when the database is opened.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .errors import DatabaseUnusable, StorageBusy, StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def data_home() -> Path:
    """The data folder: ``$ISEG_HOME``, else ``./data`` (database file, image store, exports)."""
    return Path(os.environ.get("ISEG_HOME", "data")).expanduser()


def default_url(home: Optional[Path] = None) -> str:
    return os.environ.get("ISEG_DATABASE_URL") or f"sqlite:///{(home or data_home()) / 'iseg.db'}"


def sqlite_file(url: str) -> Optional[Path]:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser()


SQLITE_HEADER = b"SQLite format 3\x00"
UNCHANGED = "Nothing was changed in it"


def check_sqlite_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that is not a whole SQLite database: raise DatabaseUnusable
    saying what is wrong. An empty or missing file is fine (it becomes a new database)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as fh:
        head = fh.read(100)
    if not head.startswith(SQLITE_HEADER):
        raise DatabaseUnusable(f"{path} is not a SQLite database (its first bytes are not SQLite's header): the "
                               f"file is damaged or is some other file. {UNCHANGED}.", path)
    if len(head) < 100:
        raise DatabaseUnusable(f"{path} is truncated: {size} bytes, shorter than SQLite's 100-byte header. "
                               f"{UNCHANGED}.", path)
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # the page count in the header is valid when its "version valid for" equals the change counter
    if head[92:96] == head[24:28] and pages and size < pages * page_size:
        raise DatabaseUnusable(f"{path} is truncated: the database says it holds {pages} pages of {page_size} "
                               f"bytes ({pages * page_size} bytes) but the file has {size}. {UNCHANGED}.", path)


def _is_busy(exc: DBAPIError) -> bool:
    msg = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return "database is locked" in msg or "database is busy" in msg or code in ("40001", "40P01", "55P03")


class Database:
    """Engine + sessions. ``transaction()`` commits on success and turns lock timeouts into ``StorageBusy``."""

    def __init__(self, url: Optional[str] = None, *, busy_timeout: float = 30.0, migrate: bool = True):
        self.url = url or default_url()
        try:
            parsed = make_url(self.url)
        except ArgumentError as e:
            raise StorageError(f"not a database URL: {self.url!r} (expected e.g. sqlite:///data/iseg.db or "
                               "postgresql+psycopg://user:pass@host/db)") from e
        self.dialect = parsed.get_backend_name()
        if parsed.drivername == "postgresql":  # the driver iseg installs
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs = {}
        self.file: Optional[Path] = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                self.file = Path(parsed.database).expanduser()
                check_sqlite_file(self.file)
                self.file.parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        elif self.dialect == "postgresql":
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except Exception as e:  # missing driver and the like
            raise StorageError(f"cannot open {parsed.render_as_string(hide_password=True)}: {e}") from e
        if self.dialect == "sqlite":
            self._sqlite_setup(busy_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self.engine.dispose()  # let go of the file before the caller reports it
                raise

    def _sqlite_setup(self, busy_timeout: float) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            # writers take the write lock up front (they queue on busy_timeout instead of failing when a
            # read turns into a write); readers never wait under WAL
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("iseg_write") else "BEGIN")

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; concurrent openers wait for each other)."""
        from alembic import command
        from alembic.config import Config

        from alembic.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        scripts = ScriptDirectory.from_config(cfg)
        known = {rev.revision for rev in scripts.walk_revisions()}
        where = str(self.file) if self.file is not None else self.safe_url
        try:
            with self.engine.connect() as conn:  # read the schema's revision before anything is written
                current = MigrationContext.configure(conn).get_current_heads()
                conn.rollback()
            newer = [r for r in current if r not in known]
            if newer:
                raise DatabaseUnusable(
                    f"{where} was written by a newer iseg: its schema is revision {', '.join(newer)}, this code "
                    f"knows revisions up to {scripts.get_current_head()}. {UNCHANGED}; run the newer iseg on it, "
                    "or restore an older copy.", self.file)
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7345001)"))  # one migrator at a time
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as e:
            if _is_busy(e):
                raise StorageBusy(f"database {self.safe_url} is locked by another process; try again") from e
            raise StorageError(f"cannot open database {self.safe_url}: {e.orig}") from e
        except DatabaseError as e:  # e.g. "database disk image is malformed": damage the header check misses
            raise DatabaseUnusable(f"{where} is damaged: SQLite says {str(e.orig).strip()!r}. {UNCHANGED}.",
                                   self.file) from e

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (rolled back at the end)."""
        with self._sessions() as s:
            try:
                yield s
            finally:
                s.rollback()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: all of it is committed, or (on any error) none of it."""
        with self._sessions() as s:
            try:
                with s.begin():
                    s.connection(execution_options={"iseg_write": True})
                    yield s
            except DBAPIError as e:
                if _is_busy(e):
                    raise StorageBusy("the database is busy with another writer; nothing was saved, "
                                      "try again") from e
                raise

    def close(self) -> None:
        self.engine.dispose()
