"""What every backend offers, and the three kinds of database error.

A backend subclasses ``Database``: it opens a connection for a URL, runs statements,
upserts batches by primary key and holds the migration lock; its ``dialect`` writes
the SQL. Everything else here (the schema, the single-row upsert, updates) is built
from those. Every error a backend raises is one of:

- ``TransientDatabaseError``: the connection, the server or another transaction is in
  the way; the same statement may succeed later (the session retries it). Its subclass
  ``DatabaseUnreachable`` is the server itself being away (a connection refused or
  lost, a server shutting down or out of connection slots): retried for as long as the
  database may be away (``sink.connect_timeout_seconds``), however many tries.
- ``PermanentDataError``: the database rejects these values; retrying cannot help (the
  sink dead-letters the rows, with the database's message).
- ``StatementError``: the statement does not fit this database (an unknown table, no
  privilege): a bug or a misconfiguration, neither retried nor blamed on the rows. Its
  subclass ``AccessDenied`` is a connection the server refused for its role, password
  or database, ``BadConnectionOptions`` a URL whose connection options the client
  refuses before trying any server (an sslmode it does not know, an undefined
  service): waiting cannot fix either, so opening a database never waits for them;
  ``SchemaMismatch`` a table that is not the one beamscore writes (a column missing or
  of another type: made by hand or altered), found when the schema is checked.

An upsert given a ``Fence`` is fenced: in the same transaction as the write it checks
that the writing run still holds, with the same fencing token, the lease of every
tranche its rows belong to (``store.ledger``), and writes nothing if not
(``LeaseLost``): a run that lost its leases, e.g. frozen past them while another run
took over, can never change the rows of the run that took over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from store.backends.dialect import Dialect
from store.migrations import migrate, not_tables, table_problems
from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, Table


class TransientDatabaseError(Exception):
    """Worth retrying: connection lost, server restart, lock or statement timeout."""


class DatabaseUnreachable(TransientDatabaseError):
    """The server is away: a connection refused or lost, a server shutting down or
    with no connection slot free."""


class PermanentDataError(Exception):
    """The database rejects these values; retrying cannot help."""


class StatementError(RuntimeError):
    """The statement is wrong for this database; not the values' fault, not retried."""


class AccessDenied(StatementError):
    """The server refused the connection: no such role or one it does not let in, a
    wrong or missing password, or no such database. The message names which, never the
    password."""


class BadConnectionOptions(StatementError):
    """The client refused the URL's connection options before trying any server (an
    option value it does not know, a service not defined, a port that is no number):
    the message names the URL (redacted) and the problem."""


class SchemaMismatch(StatementError):
    """A table of the database is not the one beamscore writes: the message names each
    column missing or of another type."""


class LeaseLost(Exception):
    """The writing run no longer holds a tranche's lease: nothing was written."""


@dataclass(frozen=True)
class Fence:
    """What a run writes under: its id, its model version and, per tranche, the fencing
    token its lease was taken with."""

    run_id: str
    model_name: str
    model_version: str
    tokens: Mapping[str, int] = field(default_factory=dict)


def _parameters(query: str) -> list[tuple[str, str]]:
    """A URL's query parameters, names and values percent-decoded (as libpq decodes them)."""
    return parse_qsl(query, keep_blank_values=True)


def _is_password(name: str) -> bool:
    """A ``password`` parameter, also when its "=" was percent-encoded (``password%3D``
    decodes to a name holding the value)."""
    return name.partition("=")[0].strip().lower() == "password"


# ``scheme://user:...@``: a user name, a colon, then anything up to the last "@"; what a
# password looks like even where it holds an unencoded "/", "?" or "#" (at which a URL
# parser, and libpq, end the host part, so that they would not see it as a password).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)(.*)@", re.DOTALL)


# ``scheme://host:port/``: a port, not a password, when every "@" comes after a "?"
# that follows the "/" (a query value such as ``application_name=me@host``). libpq
# reads a user and password up to an "@" anywhere before the first "/", "?" included.
_HOST_PORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:[0-9]+/")


def _userinfo(url: str) -> re.Match[str] | None:
    """The ``scheme://user:...@`` part of ``url`` when it holds one (see ``_USERINFO``)."""
    found = _USERINFO.match(url)
    port = _HOST_PORT.match(url)
    if found is None or port is None:
        return found
    query = url.find("?", port.end())
    return None if 0 <= query < url.find("@") else found


# ``scheme://name:X`` with no "@" before the path, X no number: no URL client reads a
# port in it, and ``user:secret`` with the "@host" left out reads so: a secret, most
# likely, which an error quoting the URL would show.
_NOT_A_PORT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\[\]]*:)([^/?#@]*)(?=[/?#]|$)")


def _not_a_port(url: str) -> re.Match[str] | None:
    """The ``scheme://name:`` part and what follows it, when that is no port number."""
    found = _NOT_A_PORT.match(url)
    return found if found is not None and not found.group(2).isdigit() and found.group(2) \
        else None


def has_userinfo_password(url: str) -> bool:
    """Whether ``url`` holds a ``user:secret@`` part before its host, however the secret
    is spelt."""
    return _userinfo(url) is not None


def port_problem(url: str) -> str | None:
    """Why the host part of ``url`` (one with no ``user...@``) cannot be read: a "port"
    that is no number, such as the secret of ``user:secret`` with its "@host" left out;
    None if it can. Never quotes the URL."""
    if _userinfo(url) is None and _not_a_port(url) is not None:
        return ("has a host whose port is no number (scheme://user@host:port/...; a "
                "password is never part of it)")
    return None


def redact(url: str) -> str:
    """The URL without any password, for logs: the one of ``user:secret@`` (everything
    from the user name's colon to the last "@", whatever it holds), a host's "port" that
    is no number (``user:secret`` without its "@host") and the value of any ``password``
    parameter, its name decoded as libpq decodes it."""
    found = _userinfo(url)
    if found is not None:
        url = f"{found.group(1)}***@{url[found.end():]}"
    elif (port := _not_a_port(url)) is not None:
        url = f"{port.group(1)}***{url[port.end():]}"
    parts = urlsplit(url)
    if not any(_is_password(k) for k, _ in _parameters(parts.query)):
        return url
    query = [("password", "***") if _is_password(k) else (k, v)
             for k, v in _parameters(parts.query)]
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query)).geturl()


class Database:
    """One connection to one database: schema, upserts by primary key, queries."""

    dialect: ClassVar[Dialect]
    # Writers of one machine take turns (a file-locked database): the sink serialises
    # them itself instead of letting them poll the database's busy handler.
    one_writer_at_a_time: ClassVar[bool] = False

    @classmethod
    def open(cls, url: str, *, password_env: str, statement_timeout_ms: int) -> Database:
        """A connection for ``url`` with the sink's settings."""
        raise NotImplementedError

    @classmethod
    def identity(cls, url: str) -> str:
        """What makes two URLs the same database (user names and options do not count)."""
        raise NotImplementedError

    @classmethod
    def carries_password(cls, url: str) -> bool:
        """Whether ``url`` holds a password (``user:secret@``, even with an unencoded
        "/" in it, or a ``password`` parameter, its name percent-decoded)."""
        if has_userinfo_password(url):
            return True
        return any(_is_password(k) for k, _ in _parameters(urlsplit(url).query))

    @classmethod
    def exists(cls, url: str) -> bool:
        """False when opening ``url`` would create the database."""
        return True

    @property
    def placeholder(self) -> str:
        return self.dialect.placeholder

    def init_schema(self) -> None:
        """Create or migrate the schema (``store.migrations``), once across processes;
        ``SchemaMismatch`` if a table then lacks a column or holds one of another type."""
        with self.migration_lock():
            if problems := not_tables(self.execute, self.dialect):
                raise SchemaMismatch(
                    f"{'; '.join(problems)}: beamscore writes tables of those names. Rename "
                    "or drop them, or point `db` at another database (or another schema "
                    "first on the search path)")
            migrate(self.execute, self.dialect)
            if problems := table_problems(self.execute, self.dialect):
                raise SchemaMismatch(
                    "the database's tables are not the ones beamscore writes (made by hand "
                    f"or altered): {'; '.join(problems)}. Fix or drop those tables, or "
                    "point `db` at another database")

    def migration_lock(self) -> AbstractContextManager[None]:
        """A transaction that only one process at a time holds."""
        raise NotImplementedError

    def exclusively(self, key: str) -> AbstractContextManager[None]:
        """A transaction that only one process at a time holds for ``key`` (a
        read-then-write decision no other process can interleave with; SQLite holds its
        one writer's lock, whatever the key). Writes inside it join it."""
        raise NotImplementedError

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]],
               fence: Fence | None = None) -> int:
        """Insert or update ``rows`` (tuples in ``table.names`` order) by primary key, in
        one transaction that first checks ``fence`` (``check_fence``)."""
        raise NotImplementedError

    def check_fence(self, fence: Fence | None, table: Table,
                    rows: Sequence[tuple[Any, ...]]) -> None:
        """Inside a write transaction: raise ``LeaseLost`` unless ``fence``'s run holds,
        with its token, the lease of every tranche of ``rows`` (locking those ledger
        rows against a takeover until the transaction ends, where the database can)."""
        if fence is None:
            return
        column = table.names.index("tranche")
        self.check_lease(fence, {row[column] for row in rows})

    def check_lease(self, fence: Fence | None, tranches: Iterable[str]) -> None:
        """Raise ``LeaseLost`` unless ``fence``'s run holds, with its token, the lease
        of each of ``tranches``: ``check_fence``'s test; outside a write transaction a
        read, for what is written elsewhere than in the database (files)."""
        if fence is None:
            return
        for tranche in sorted(set(tranches)):
            token = fence.tokens.get(tranche)
            if token is None or not self.execute(self.dialect.fence_check(), [
                    tranche, fence.model_name, fence.model_version, fence.run_id, token]):
                raise LeaseLost(f"run {fence.run_id} no longer holds the lease of tranche "
                                f"{tranche} (fencing token {token}): another run took it "
                                "over; nothing was written")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; the rows it returns (none for a statement without)."""
        raise NotImplementedError

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement that changes rows; how many it changed."""
        raise NotImplementedError

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]],
                           fence: Fence | None = None) -> int:
        return self.upsert(PREDICTIONS, rows, fence)

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]],
                            fence: Fence | None = None) -> int:
        return self.upsert(DEAD_LETTERS, rows, fence)

    def upsert_run(self, row: dict[str, Any]) -> None:
        """Insert a ``runs`` row or update the columns ``row`` names."""
        self.upsert_values(RUNS, row)

    def upsert_values(self, table: Table, row: Mapping[str, Any], only_if: str = "",
                      params: Sequence[Any] = ()) -> None:
        """Insert one row of the columns ``row`` names, or update them in the stored
        row of its key where the condition ``only_if`` on the stored row holds
        (``params``: its parameters)."""
        cols = [c for c in table.names if c in row]
        self.execute(self.dialect.upsert(table, cols, only_if=only_if),
                     [*(row[c] for c in cols), *params])

    def update(self, table: Table, values: Mapping[str, Any],
               where: Mapping[str, Any]) -> int:
        """Set ``values`` in the rows whose columns equal ``where``; how many rows."""
        return self.execute_count(self.dialect.update(table, list(values), list(where)),
                                  [*values.values(), *where.values()])
