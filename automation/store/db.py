"""The database: engine set-up, transactions, and the migrations that bring a
database to the schema of :mod:`automation.store.records`.

SQLite in the state folder by default (WAL, ``busy_timeout``, write
transactions taken with ``BEGIN IMMEDIATE`` so that a read never has to upgrade
to a write lock); any SQLAlchemy URL, e.g. PostgreSQL, for more than one API
replica. Every process that opens the store brings the database to the newest
revision first (Alembic, ``automation/store/migrations``), one process at a
time: a database written by an older version upgrades in place, and one that
predates the migrations (0.1.0, no ``alembic_version`` table) is recognised as
the first revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The revision whose schema 0.1.0 created without Alembic.
BASELINE_REVISION = "0001"
#: Any constant; PostgreSQL serialises migrations on this advisory lock.
_PG_MIGRATION_LOCK = 0x6C6C6D65


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Driver-level autocommit: the "begin" hook below issues BEGIN itself, so
    # write transactions can take the lock up front.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine with the project's SQLite settings (or a pre-pinging pool elsewhere)."""
    kwargs: dict[str, Any] = {"future": True}
    sqlite = url.startswith("sqlite")
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


@contextmanager
def transaction(engine: Engine, write: bool = False) -> Iterator[Connection]:
    """A transaction; ``write`` takes SQLite's write lock at BEGIN."""
    with engine.connect() as conn:
        conn.info["write"] = write
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("write", None)


def _config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision a database is at (None: no ``alembic_version`` table)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the database to the newest revision; returns it.

    Serialised across processes: SQLite's write lock (``BEGIN IMMEDIATE``) or a
    PostgreSQL advisory lock is held while the revision is read and upgraded.
    """
    head = head_revision()
    with transaction(engine) as conn:
        if current_revision(conn) == head:
            return head  # the common case: nothing to lock or import
    from alembic import command

    with transaction(engine, write=True) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        current = current_revision(conn)
        if current == head:
            return head
        cfg = _config()
        cfg.attributes["connection"] = conn
        if current is None and inspect(conn).has_table("endpoints"):
            command.stamp(cfg, BASELINE_REVISION)  # made by 0.1.0, before migrations
        command.upgrade(cfg, "head")
    return head
