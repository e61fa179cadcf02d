"""Which database holds a store's registry: SQLite in the root (the embedded default) or
a PostgreSQL server that many machines share.

A store is bound to PostgreSQL once, by ``bind_database`` (the edge does it when
``TOWERFLOW_DATABASE_URL`` is set), which writes ``<root>/database.json``: the server,
database, user and schema, never a password. From then on every process that opens the
store uses that database, whether or not its own environment names it: a process that
forgot the variable fails to connect with a clear error instead of writing a second,
private registry beside the shared one (split brain).

Credentials come from the environment at connect time, the usual ways for libpq:
the password of ``TOWERFLOW_DATABASE_URL`` when it names the same server, database and
user; else ``PGPASSWORD``, ``PGPASSFILE`` / ``~/.pgpass``, or the server's trust and peer
rules. TLS and other connection options go in the URL's query (``?sslmode=require``)
and are kept in the binding; libpq's ``PG*`` variables apply too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from storage.errors import StorageError
from storage.fs import atomic_write_bytes
from storage.layout import Layout

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DATABASE_URL_ENV",
    "DatabaseError",
    "DatabaseRef",
    "DatabaseUnavailableError",
    "bind_database",
    "connect",
    "connection_kwargs",
    "database_errors",
    "read_binding",
]

# The variable the edge reads (StorageSettings.database_url) and `connect` takes a
# password from when it names the bound database.
DATABASE_URL_ENV: Final = "TOWERFLOW_DATABASE_URL"

_SCHEMES: Final = ("postgresql", "postgres")
_SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_SCHEMA: Final = "towerflow"
# Seconds a connection attempt waits for the server (libpq's default is forever).
CONNECT_TIMEOUT_S: Final = 10


class DatabaseError(StorageError):
    """The store's database cannot be reached, or its binding is invalid. The message
    names the server and database, never a password."""


class DatabaseUnavailableError(DatabaseError, ConnectionError):
    """The server cannot be reached, or dropped the connection: a retry may cure it
    (a ConnectionError, so ``tasks.retry`` retries it)."""


@dataclass(frozen=True)
class DatabaseRef:
    """A PostgreSQL database a store is bound to (no password: it is never stored).

    ``schema``: the PostgreSQL schema holding this store's tables, so several stores can
    share one database."""

    host: str
    port: int
    dbname: str
    user: str
    schema: str = DEFAULT_SCHEMA
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> DatabaseRef:
        """Parse ``postgresql://user[:password]@host[:port]/dbname[?options]``; the
        password is dropped. ``?schema=NAME`` picks the schema (default ``towerflow``).
        Raises ValueError naming what is wrong (the password masked)."""
        shown = _mask(url)
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"database URL {shown!r} must start with postgresql://")
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname or not parts.username:
            raise ValueError(
                f"database URL {shown!r} must name a user, a host and a database: "
                "postgresql://USER@HOST[:PORT]/DBNAME"
            )
        try:
            port = parts.port or 5432
        except ValueError:
            raise ValueError(f"database URL {shown!r} has an invalid port") from None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = query.pop("schema", DEFAULT_SCHEMA)
        if not _SCHEMA_RE.fullmatch(schema):
            raise ValueError(
                f"database URL {shown!r}: schema {schema!r} must be a lower-case SQL "
                "identifier (letters, digits, '_')"
            )
        if "password" in query:
            raise ValueError(f"database URL {shown!r}: put the password in the URL's user part")
        return cls(
            host=parts.hostname,
            port=port,
            dbname=dbname,
            user=unquote(parts.username),
            schema=schema,
            options=tuple(sorted(query.items())),
        )

    @property
    def url(self) -> str:
        """The URL without a password (safe for logs and errors)."""
        query = urlencode([*self.options, ("schema", self.schema)])
        return (
            f"postgresql://{quote(self.user, safe='')}@{self.host}:{self.port}/"
            f"{quote(self.dbname, safe='')}?{query}"
        )

    def same_database(self, other: DatabaseRef) -> bool:
        """Whether both name one schema of one database as one user."""
        key = ("host", "port", "dbname", "user", "schema")
        return all(getattr(self, k) == getattr(other, k) for k in key)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": "postgresql",
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "schema": self.schema,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DatabaseRef:
        if raw.get("backend") != "postgresql":
            raise ValueError(f"unknown database backend {raw.get('backend')!r}")
        ref = cls(
            host=str(raw["host"]),
            port=int(raw["port"]),
            dbname=str(raw["dbname"]),
            user=str(raw["user"]),
            schema=str(raw["schema"]),
            options=tuple(sorted((str(k), str(v)) for k, v in raw.get("options", {}).items())),
        )
        if not _SCHEMA_RE.fullmatch(ref.schema):
            raise ValueError(f"invalid schema {ref.schema!r}")
        return ref


def _mask(url: str) -> str:
    """``url`` with its passwords (the user part's, a ``password=`` option's) as ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = [
        (k, "***" if k == "password" else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return parts._replace(query=urlencode(query, safe="*")).geturl()


def read_binding(layout: Layout) -> DatabaseRef | None:
    """The database the store at ``layout`` is bound to, or None (its registry is
    ``registry.sqlite``). Raises DatabaseError for a binding file that cannot be read."""
    path = layout.database_binding
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatabaseError(f"{path}: cannot read the store's database binding: {e}") from e
    try:
        return DatabaseRef.from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise DatabaseError(f"{path}: invalid database binding: {e}") from e


def bind_database(layout: Layout, url: str) -> DatabaseRef:
    """Bind the store at ``layout`` to the PostgreSQL database ``url`` names (written
    once, atomically; the password is never written), or check the binding it has.

    Raises DatabaseError when the store is bound to another database, or when it already
    keeps versions in its own ``registry.sqlite`` (moving a registry is not supported:
    they would vanish from CURRENT's view). ValueError for a malformed URL.
    """
    ref = DatabaseRef.from_url(url)
    bound = read_binding(layout)
    if bound is not None:
        if not bound.same_database(ref):
            raise DatabaseError(
                f"the store at {layout.root} is bound to {bound.url}, not {ref.url} "
                f"(see {layout.database_binding})"
            )
        return bound
    if layout.registry_db.exists() and layout.registry_db.stat().st_size > 0:
        raise DatabaseError(
            f"the store at {layout.root} keeps its registry in {layout.registry_db}; it "
            f"cannot be moved to {ref.url}: use a new store root for the shared database"
        )
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.database_binding, json.dumps(ref.to_json(), indent=2).encode())
    return ref


@contextmanager
def database_errors(ref: DatabaseRef) -> Iterator[None]:
    """Raise psycopg's errors in the block as ``DatabaseUnavailableError`` (the server
    went away: operational errors) or ``DatabaseError`` (the rest), naming ``ref``."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as e:
        raise DatabaseUnavailableError(f"the store's database {ref.url}: {e}") from e
    except psycopg.Error as e:
        raise DatabaseError(f"the store's database {ref.url}: {e}") from e


def _password(ref: DatabaseRef) -> str | None:
    """The password of ``$TOWERFLOW_DATABASE_URL`` if it names ``ref``'s database."""
    url = os.environ.get(DATABASE_URL_ENV)
    if not url:
        return None
    try:
        env_ref = DatabaseRef.from_url(url)
    except ValueError:
        return None
    password = urlsplit(url).password
    return unquote(password) if password is not None and env_ref.same_database(ref) else None


def connection_kwargs(ref: DatabaseRef) -> dict[str, Any]:
    """libpq's connection parameters for ``ref``'s database: server, database, user, the
    URL's options, a connect timeout, and the password when the environment has one for
    it (so the result is a secret: never log it)."""
    params: dict[str, Any] = dict(ref.options)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "towerflow")
    password = _password(ref)
    if password is not None:
        params["password"] = password
    return {"host": ref.host, "port": ref.port, "dbname": ref.dbname, "user": ref.user, **params}


def connect(ref: DatabaseRef, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A new connection to ``ref``'s database (callers qualify their tables with
    ``ref.schema``). Raises DatabaseError naming the server when it cannot connect.
    Short calls take one from ``storage.pg_pool.pooled`` instead."""
    import psycopg  # here: stores on SQLite never load the driver

    try:
        conn = psycopg.connect(autocommit=autocommit, **connection_kwargs(ref))
    except psycopg.OperationalError as e:
        raise DatabaseUnavailableError(
            f"cannot connect to the store's database {ref.url}: {e}"
        ) from e
    return conn
