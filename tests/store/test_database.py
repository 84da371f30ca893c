"""The database URL: its backend, its identity (what shares limiter state), a password
kept out of logs, and opening only what exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from store.backends.sqlite import sqlite_path
from store.database import (
    backend_of,
    carries_password,
    connect_existing,
    database_identity,
    redact,
)


@pytest.mark.parametrize("url, backend", [("sqlite:///var/b.db", "sqlite"),
                                          ("postgresql://u@h:5432/d", "postgresql"),
                                          ("postgres://h/d", "postgresql")])
def test_the_backend_is_named_by_the_scheme(url: str, backend: str) -> None:
    assert backend_of(url) == backend


@pytest.mark.parametrize("url", ["mysql://u:hunter2@127.0.0.1/test",
                                 "postgresql+psycopg://u:hunter2@127.0.0.1/test"])
def test_another_scheme_is_refused_naming_the_scheme_only(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        backend_of(url)
    scheme = url.partition(":")[0]
    assert f"scheme '{scheme}'" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "127.0.0.1" not in str(raised.value)


@pytest.mark.parametrize("url, shown", [
    # libpq and urlsplit end the host part at the "/": no password to them, one to us
    ("postgresql://beamscore:pa/ss@127.0.0.1:5432/db", "postgresql://beamscore:***@127.0.0.1:5432/db"),
    ("postgresql://u:p?a#ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
    ("mysql://u:hunter2@127.0.0.1/test", "mysql://u:***@127.0.0.1/test"),
    ("postgresql://u@h/db?sslmode=require&password=pa/ss", "postgresql://u@h/db?sslmode=require&password=***"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    # a port, and an "@" in a query value: no password
    ("postgresql://db:5432/scores?application_name=me@host",
     "postgresql://db:5432/scores?application_name=me@host"),
    # digits then an "@" before any "?": a password (libpq would read a port and a path)
    ("postgresql://me:1234/abc@host/db", "postgresql://me:***@host/db"),
    # libpq reads user "me", password "1234?x": a "?" before any "/" ends no userinfo
    ("postgresql://me:1234?x@db.example/scores", "postgresql://me:***@db.example/scores"),
    ("sqlite:////srv/a:b@c.db", "sqlite:////srv/a:b@c.db"),
    # the "=" percent-encoded: the decoded name holds the value
    ("postgresql://u@h/db?password%3Ds3cr3t", "postgresql://u@h/db?password=***"),
])
def test_a_password_is_found_and_redacted_however_it_is_spelt(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert carries_password(url) is ("***" in shown)


def test_three_slashes_are_relative_and_four_absolute() -> None:
    assert sqlite_path("sqlite:///var/b.db") == "var/b.db"
    assert sqlite_path("sqlite:////srv/b.db") == "/srv/b.db"


def test_urls_of_one_database_have_one_identity(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limiter's state is keyed by this: the same server and database through
    other users or default ports, or the same SQLite file by a relative path, share it."""
    assert database_identity("postgresql://a@db:5432/scores") == \
        database_identity("postgresql://b@db/scores?sslmode=require")
    assert database_identity("postgresql://db/scores") != database_identity("postgresql://db/other")
    assert database_identity("postgresql://db:5433/scores") != \
        database_identity("postgresql://db:5432/scores")
    monkeypatch.chdir(tmp_path)
    assert database_identity("sqlite:///b.db") == \
        database_identity(f"sqlite:///{os.path.join(tmp_path, 'b.db')}")


def test_a_password_never_reaches_a_log_line() -> None:
    assert redact("postgresql://u:s3cret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
    assert redact("postgresql://u@h/d?sslmode=require&pass%77ord=s3cret") == \
        "postgresql://u@h/d?sslmode=require&password=***"
    assert redact("sqlite:////var/b.db") == "sqlite:////var/b.db"


def test_connect_existing_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert connect_existing(url) is None
    assert not (tmp_path / "none.db").exists()


_URL_CHARS = "abcXYZ019@:/?#=&%.-_"


@given(user=st.text(alphabet="abcxyz", min_size=1, max_size=5),
       secret=st.text(alphabet=_URL_CHARS, min_size=1, max_size=12),
       host=st.sampled_from(["db", "db.example", "127.0.0.1"]),
       rest=st.text(alphabet=_URL_CHARS, max_size=20),
       with_port=st.booleans())
@example(user="me", secret="1234?x", host="db.example", rest="scores", with_port=False)
@settings(max_examples=400, deadline=None)
def test_every_password_libpq_reads_from_a_url_is_found_and_redacted(
        user: str, secret: str, host: str, rest: str, with_port: bool) -> None:
    """Differential against libpq's own parse: whatever user:secret@ part libpq reads a
    password from, the URL is refused (carries_password) and the password never shows
    in ``redact``; a URL libpq reads no password from but an "@" in a query value is
    not refused for it."""
    psycopg = pytest.importorskip("psycopg")
    url = f"postgresql://{user}:{secret}@{host}{':5432' if with_port else ''}/{rest}"
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(url)
    except (psycopg.ProgrammingError, UnicodeDecodeError):
        return  # libpq refuses it: nothing connects with it
    password = parsed.get("password")
    if password:
        assert carries_password(url)
        assert redact(url).startswith(f"postgresql://{user}:***@")
    plain = f"postgresql://{host}:5432/scores?application_name={user}@{host}"
    assert not carries_password(plain) and redact(plain) == plain
