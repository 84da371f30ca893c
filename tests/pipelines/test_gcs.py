"""gs:// end to end: landing tranches, model registry and outputs on Google Cloud Storage.

Runs against a GCS emulator (gcp-storage-emulator, in memory) on 127.0.0.1 only; no GCP
project, no credentials and no internet are involved. Test data is put in place with the
real google-cloud-storage client; the product reaches the bucket through Beam's own GCS
filesystem (apache_beam.io.gcp.gcsio) exactly as it would on Dataflow.

How Beam's GCS client is pointed at the emulator (Beam 2.77, google-cloud-storage 3.x):

* ``gcsio.py`` itself never reads ``STORAGE_EMULATOR_HOST``: ``create_storage_client``
  builds a plain ``google.cloud.storage.Client``, and *that* class takes the endpoint from
  ``STORAGE_EMULATOR_HOST``. A new client is built for every filesystem call, so the
  variable only has to be set before the first gs:// access.
* Before building the client Beam resolves credentials with ``google.auth.default()``,
  retried 4 times with exponential backoff (``auth._Credentials``), and only then falls
  back to ``Client.create_anonymous_client()``. With no credentials that costs ~25-45 s and
  15 probes of the metadata server 169.254.169.254 (hangs where it is black-holed).
  ``GOOGLE_APPLICATION_CREDENTIALS`` therefore points at a throwaway ``authorized_user``
  file holding a static, far-future access token: ``google.auth.default()`` resolves on
  the first try without I/O, the token never needs refreshing, and the emulator ignores
  the ``Authorization`` header. ``GOOGLE_CLOUD_PROJECT`` supplies the project.
* Beam caches the resolved credentials for the whole process; the fixture resets that
  cache for this module and restores it afterwards.

Every non-loopback connect or DNS lookup is refused and recorded while this module runs;
each test fails if one was attempted.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcp_storage_emulator import server as gcs_emulator
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from landing.formats import Rejection, number_chunks, read_chunk, resolve
from landing.reading import Chunk, Planned
from landing.samples import BAD_COUNTS, make_docs, write_tranche
from landing.splitters import MAX_PIECES_PER_GROUP, Limits, row_ranges
from models.recipe import train_and_evaluate
from models.registry import ModelIntegrityError, ModelRef, ModelRegistry
from pipelines import cli
from pipelines.configuration.config import load_config
from pipelines.orchestration.exit_codes import EXIT_ERROR, EXIT_MISSING, EXIT_TEMPFAIL
from tests.pipelines.helpers import replace_after_planning

BUCKET = "beamscore-test"
DAY = "2026-01-01"
EMPTY_DAY = "2026-01-02"  # no objects at all under landing/dt=2026-01-02/
BIG_DAY = "2026-01-03"  # one JSONL file over 1 MiB: read as several byte-range chunks
FORMATS = ("jsonl", "jsonl.gz", "parquet", "csv")
DOCS_PER_FILE = 100  # 400 valid + 16 bad records: dead-letter ratio 3.8% < 5% (exit 0)
MODEL = "gcs-demo"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def gs(*parts: str) -> str:
    return "/".join([f"gs://{BUCKET}", *parts])


# ------------------------------------------------------------------ fixtures
@dataclass
class NetworkGuard:
    """Refuses (and records) any connection or name lookup off the loopback interface."""

    blocked: list[str] = field(default_factory=list)

    def install(self, mp: pytest.MonkeyPatch) -> None:
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo

        def check(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
                self.blocked.append(f"connect {address[0]}:{address[1]}")
                raise OSError(f"test_gcs: network access to {address[0]} refused")

        def connect(sock: socket.socket, address: Any) -> None:
            check(sock, address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            check(sock, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if name is not None and name not in LOOPBACK:
                self.blocked.append(f"resolve {name}")
                raise socket.gaierror(socket.EAI_NONAME, f"test_gcs: lookup of {name} refused")
            return real_getaddrinfo(host, *args, **kwargs)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)


@dataclass
class Gcs:
    endpoint: str
    client: Any  # google.cloud.storage.Client (anonymous, on the emulator)
    guard: NetworkGuard

    @property
    def bucket(self) -> Any:
        return self.client.bucket(BUCKET)

    def names(self, prefix: str) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs(BUCKET, prefix=prefix))

    def download(self, name: str) -> bytes:
        data: bytes = self.bucket.blob(name).download_as_bytes()
        return data


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gcs]:
    """An in-memory GCS emulator on loopback, with Beam and the client pointed at it."""
    home = tmp_path_factory.mktemp("gcs-env")
    adc = home / "emulator-credentials.json"
    adc.write_text(json.dumps({
        "type": "authorized_user", "client_id": "emulator", "client_secret": "emulator",
        "refresh_token": "emulator", "token": "emulator-static-token",
        "expiry": "2999-01-01T00:00:00Z",
    }))
    with pytest.MonkeyPatch.context() as mp:
        guard = NetworkGuard()
        guard.install(mp)
        port = _free_loopback_port()
        server = gcs_emulator.create_server("127.0.0.1", port, in_memory=True,
                                            default_bucket=BUCKET)
        emulator_log = logging.getLogger("gcp_storage_emulator")  # one INFO line a request
        emulator_level = emulator_log.level
        emulator_log.setLevel(logging.WARNING)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
            mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
            mp.setenv("GOOGLE_CLOUD_PROJECT", "beamscore-test")
            mp.setenv("CLOUDSDK_CONFIG", str(home / "gcloud"))  # never a developer's gcloud
            # Belt and braces (read when google-auth's metadata module is first imported):
            # no metadata-server probe should google-auth ever get that far.
            mp.setenv("NO_GCE_CHECK", "true")
            # Beam resolves credentials once per process; resolve them again under this
            # environment, and give later tests back whatever was cached before.
            from apache_beam.internal.gcp import auth

            mp.setattr(auth._Credentials, "_credentials_init", False, raising=False)
            mp.setattr(auth._Credentials, "_credentials", None, raising=False)
            client = storage.Client(project="beamscore-test", credentials=AnonymousCredentials())
            assert client.api_endpoint == endpoint
            yield Gcs(endpoint=endpoint, client=client, guard=guard)
            client.close()
        finally:
            server.stop()
            emulator_log.setLevel(emulator_level)


@pytest.fixture(autouse=True)
def _no_network_off_loopback(gcs: Gcs) -> Iterator[None]:
    # Checked after every test: the module fixtures (set up before this one) are covered.
    yield
    assert not gcs.guard.blocked, f"tried to reach the network: {gcs.guard.blocked}"


@dataclass(frozen=True)
class Landing:
    paths: list[str]  # gs:// URIs of the uploaded tranche files
    valid_ids: set[str]
    n_bad: int
    local_root: str  # the same files on the local disk


@pytest.fixture(scope="module")
def landing(gcs: Gcs, tmp_path_factory: pytest.TempPathFactory) -> Landing:
    """One tranche in all four formats, each with known bad records, uploaded to the bucket."""
    local = tmp_path_factory.mktemp("landing")
    docs = list(make_docs(DOCS_PER_FILE * len(FORMATS), seed=11, prefix=DAY))
    paths = []
    for j, fmt in enumerate(FORMATS):
        part = docs[j * DOCS_PER_FILE:(j + 1) * DOCS_PER_FILE]
        path = Path(write_tranche(str(local), DAY, part, fmt, name=f"part-{j}",
                                  inject_bad=True))
        name = f"landing/dt={DAY}/{path.name}"
        gcs.bucket.blob(name).upload_from_filename(str(path))
        paths.append(gs(name))
    assert gcs.names(f"landing/dt={DAY}/") == sorted(p[len(gs()) + 1:] for p in paths)
    assert gcs.names(f"landing/dt={EMPTY_DAY}/") == []
    return Landing(paths=paths, valid_ids={d["id"] for d in docs},
                   n_bad=sum(BAD_COUNTS[f] for f in FORMATS), local_root=str(local))


@pytest.fixture(scope="module")
def trained() -> tuple[Any, dict[str, Any]]:
    docs = list(make_docs(300, seed=7, prefix="train"))
    return train_and_evaluate([d["text"] for d in docs], [d["label"] for d in docs])


def _register(root: str, name: str, trained: tuple[Any, dict[str, Any]]) -> ModelRef:
    model, metrics = trained
    return ModelRegistry(root).register(
        name, model, preprocessing=load_config().preprocessing.to_dict(),
        source="tests/test_gcs.py", metrics=metrics,
    )


@pytest.fixture(scope="module")
def registry(gcs: Gcs, trained: tuple[Any, dict[str, Any]]) -> ModelRef:
    ref = _register(gs("registry"), MODEL, trained)
    assert gcs.names(f"registry/{MODEL}/") == [  # the first version is production
        f"registry/{MODEL}/1/.claimed", f"registry/{MODEL}/1/metadata.json",
        f"registry/{MODEL}/1/model.joblib", f"registry/{MODEL}/aliases.json",
    ]
    return ref


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------ tests
def test_registry_round_trip_on_gcs(registry: ModelRef) -> None:
    reg = ModelRegistry(gs("registry"))
    assert reg.names() == [MODEL]
    assert reg.versions(MODEL) == ["1"]
    ref = reg.resolve(MODEL)
    assert (ref.version, ref.sha256) == ("1", registry.sha256)
    reg.promote(MODEL, "1")
    assert reg.aliases(MODEL) == {"production": "1"}
    model = reg.load(reg.resolve(MODEL))
    assert model.predict_proba(["my parcel never arrived, tracking says shipped"]).shape == (
        1, len(ref.metadata["classes"]))


def test_score_reads_gcs_and_writes_gcs_outputs(
    gcs: Gcs, landing: Landing, registry: ModelRef, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "x.db"
    rc, out, err = _run_cli([
        "score", "--date", DAY, "--input-root", gs("landing"), "--registry", gs("registry"),
        "--model", MODEL, "--db", f"sqlite:///{db}", "--output-dir", gs("out"),
    ], capsys)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"

    names = gcs.names(f"out/dt={DAY}/")
    parquet = [n for n in names if n.rsplit("/", 1)[1].startswith("predictions-")
               and n.endswith(".parquet")]
    dead = [n for n in names if n.rsplit("/", 1)[1].startswith("dead_letters-")
            and n.endswith(".jsonl")]
    assert parquet, names
    assert dead, names

    tables = [pq.read_table(io.BytesIO(gcs.download(n))) for n in parquet]
    rows = [r for t in tables for r in t.to_pylist()]
    assert len(rows) == len(landing.valid_ids)
    assert {r["doc_id"] for r in rows} == landing.valid_ids
    assert {r["model_name"] for r in rows} == {MODEL}
    assert {r["model_sha256"] for r in rows} == {registry.sha256}
    assert {r["source_file"] for r in rows} == set(landing.paths)

    dead_letters = [json.loads(line) for n in dead
                    for line in gcs.download(n).decode().splitlines()]
    assert len(dead_letters) == landing.n_bad
    assert {d["source_file"] for d in dead_letters} == set(landing.paths)

    with sqlite3.connect(db) as conn:
        (n_predictions,) = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
        (n_dead,) = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        runs = conn.execute("SELECT run_id, status, counts FROM runs").fetchall()
    assert n_predictions == len(landing.valid_ids)
    assert n_dead == landing.n_bad
    assert len(runs) == 1
    run_id, status, counts_json = runs[0]
    assert status == "succeeded"
    counts = json.loads(counts_json)
    for c in (counts["total"], counts["tranches"][DAY]):
        assert c["read"] == c["scored"] + c["dead_lettered"], c
        assert (c["read"], c["scored"], c["dead_lettered"]) == (
            len(landing.valid_ids) + landing.n_bad, len(landing.valid_ids), landing.n_bad)
    assert json.loads(gcs.download(f"out/_runs/{run_id}.json"))["total"] == counts["total"]


def test_plan_lists_gcs_files_and_reports_missing_tranche(
    landing: Landing, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run_cli([
        "plan", "--from", DAY, "--to", EMPTY_DAY, "--input-root", gs("landing"),
        "--registry", gs("registry"), "--model", MODEL, "--db", f"sqlite:///{tmp_path}/p.db",
    ], capsys)
    assert rc == EXIT_MISSING, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    listed = [line.split()[-1] for line in lines if line.strip().startswith(FORMATS)]
    assert sorted(listed) == sorted(landing.paths), out
    (day_line,) = [line for line in lines if line.startswith(DAY)]
    assert f"{len(FORMATS)} file(s)" in day_line
    (empty_line,) = [line for line in lines if line.startswith(EMPTY_DAY)]
    assert "missing" in empty_line and gs("landing", f"dt={EMPTY_DAY}") in empty_line, out


@pytest.mark.slow
def test_large_gcs_jsonl_is_read_in_byte_ranges(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Uncompressed JSONL over the chunk size is split; each chunk seeks into the object."""
    docs = list(make_docs(3500, seed=5, prefix="big"))
    local = write_tranche(str(tmp_path / "landing"), BIG_DAY, docs, "jsonl", inject_bad=True)
    assert os.path.getsize(local) > 1 << 20  # the smallest chunk size
    gcs.bucket.blob(f"landing-big/dt={BIG_DAY}/part-0.jsonl").upload_from_filename(local)
    common = ["--date", BIG_DAY, "--input-root", gs("landing-big"), "--registry",
              gs("registry"), "--model", MODEL, "--db", f"sqlite:///{tmp_path}/big.db"]

    rc, out, err = _run_cli(["plan", *common], capsys)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    chunks = re.search(r"^(\d+) chunk\(s\)", out, re.MULTILINE)
    assert chunks and int(chunks.group(1)) >= 2, out

    rc, out, err = _run_cli(["score", *common, "--output-dir", gs("out-big")], capsys)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    names = gcs.names(f"out-big/dt={BIG_DAY}/predictions-")
    ids = [i for n in names
           for i in pq.read_table(io.BytesIO(gcs.download(n)), columns=["doc_id"])
           .column("doc_id").to_pylist()]
    assert len(ids) == len(docs) and set(ids) == {d["id"] for d in docs}
    with sqlite3.connect(tmp_path / "big.db") as conn:
        (counts_json,) = conn.execute("SELECT counts FROM runs").fetchone()
    total = json.loads(counts_json)["total"]
    assert (total["read"], total["scored"], total["dead_lettered"]) == (
        len(docs) + BAD_COUNTS["jsonl"], len(docs), BAD_COUNTS["jsonl"])


def _count_downloads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the downloads from now on, appended as the client makes them."""
    fetched: list[int] = []
    download = storage.Blob.download_as_bytes

    def counting(self: Any, *args: Any, **kwargs: Any) -> bytes:
        out: bytes = download(self, *args, **kwargs)
        fetched.append(len(out))
        return out

    monkeypatch.setattr(storage.Blob, "download_as_bytes", counting)
    return fetched


@pytest.mark.parametrize("pinned", [False, True], ids=["by name", "at its generation"])
def test_a_byte_range_downloads_about_its_own_bytes(
        gcs: Gcs, monkeypatch: pytest.MonkeyPatch, pinned: bool) -> None:
    """Numbering a JSONL object's chunks downloads it once; each chunk's read then
    fetches about its own range, not Beam's 16 MiB block from its start to the end;
    read at the generation planned or by name alike."""
    docs = list(make_docs(12_000, seed=3, prefix="ranges"))
    data = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    size, step = len(data), 1 << 20
    assert size > 3 * step
    name = f"landing-ranges-{pinned}/dt=2026-01-04/part-0.jsonl"
    blob = gcs.bucket.blob(name)
    blob.upload_from_string(data)
    planned = Planned(size, f"generation {blob.generation}") if pinned else None
    chunks = [Chunk("t", gs(name), "jsonl", start, min(start + step, size), i, planned=planned)
              for i, start in enumerate(range(0, size, step))]

    fetched = _count_downloads(monkeypatch)
    numbered = number_chunks(chunks)
    assert sum(fetched) <= size
    per_chunk, ids = [], []
    for chunk in numbered:
        fetched.clear()
        items = list(read_chunk(chunk))
        per_chunk.append(sum(fetched))
        assert all(not isinstance(item, Rejection) for item, _ in items), items[:1]
        ids += [(position, item["id"]) for item, position in items]
    assert ids == [(i + 1, d["id"]) for i, d in enumerate(docs)]
    assert max(per_chunk) < step + (256 << 10), per_chunk


def test_the_pieces_of_a_one_group_parquet_object_download_it_once_each(
        gcs: Gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of one row group, for 40 ranges: cut into 8 pieces, each of which
    downloads the group (pyarrow fetches column chunks whole) and the footer once."""
    docs = list(make_docs(20_000, seed=4, prefix="groups"))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(docs), buf, row_group_size=len(docs))
    data = buf.getvalue()
    name = "landing-groups/dt=2026-01-05/part-0.parquet"
    gcs.bucket.blob(name).upload_from_string(data)
    extent = resolve("parquet")[0].estimate(gs(name), len(data), False)
    assert extent.groups == (len(docs),)
    spans = row_ranges(len(data), False, extent, Limits(1 << 20, 500))  # 40 ranges' rows
    chunks = [Chunk("t", gs(name), "parquet", a, b, i) for i, (a, b, _) in enumerate(spans)]
    assert len(chunks) == MAX_PIECES_PER_GROUP

    fetched = _count_downloads(monkeypatch)
    ids = [item["id"] for chunk in chunks for item, _ in read_chunk(chunk)]
    assert ids == [d["id"] for d in docs]
    assert sum(fetched) <= MAX_PIECES_PER_GROUP * (len(data) + (64 << 10)), (
        sum(fetched), len(data))


@pytest.mark.slow
def test_an_object_replaced_after_planning_is_one_dead_letter_and_rescored_next(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listed at 3,500 records (several byte ranges), overwritten by 5,000: not one
    record of either generation is scored, the object is one read dead letter saying it
    was replaced since planning, the tranche is left failed (exit 75); the next run
    scores the new generation whole."""
    day, name = "2026-01-06", "landing-replaced/dt=2026-01-06/part-0.jsonl"
    old = b"".join(json.dumps(d).encode() + b"\n" for d in make_docs(3500, seed=1, prefix="old"))
    new_docs = list(make_docs(5000, seed=2, prefix="new"))
    new = b"".join(json.dumps(d).encode() + b"\n" for d in new_docs)
    assert len(old) > 1 << 20
    gcs.bucket.blob(name).upload_from_string(old)
    replace_after_planning(monkeypatch, lambda: gcs.bucket.blob(name).upload_from_string(new))
    db = tmp_path / "r.db"
    argv = ["score", "--date", day, "--input-root", gs("landing-replaced"), "--registry",
            gs("registry"), "--model", MODEL, "--db", f"sqlite:///{db}", "--output-dir",
            gs("out-replaced"), "--read-chunk-bytes", str(1 << 20)]
    rc, out, err = _run_cli(argv, capsys)
    assert rc == EXIT_TEMPFAIL, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone() == (0,)
        dead = conn.execute("SELECT source_file, position, stage, reason FROM dead_letters"
                            ).fetchall()
        [(counts,)] = conn.execute("SELECT counts FROM runs").fetchall()
        [(status,)] = conn.execute("SELECT status FROM tranches").fetchall()
    [(source, position, stage, reason)] = dead
    assert (source, position, stage) == (gs(name), 0, "read")
    assert reason.startswith(f"unreadable jsonl file: {gs(name)}: InputChanged: replaced "
                             f"since planning: listed as generation "), reason
    total = json.loads(counts)["total"]
    assert (total["read"], total["scored"], total["dead_lettered"]) == (1, 0, 1)
    assert status == "failed"
    assert not [n for n in gcs.names(f"out-replaced/dt={day}/") if n.endswith(".parquet")]

    monkeypatch.undo()
    rc, out, err = _run_cli(argv, capsys)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    with sqlite3.connect(db) as conn:
        ids = {r for (r,) in conn.execute("SELECT doc_id FROM predictions")}
        assert conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone() == (0,)
    assert ids == {d["id"] for d in new_docs}


def test_an_object_gone_since_planning_or_while_read_is_a_dead_letter_saying_so(
        gcs: Gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted after planning: its generation is not found when opened; a generation
    gone during the read (what Cloud Storage answers once it is overwritten): the
    rest of the chunk is one dead letter saying so."""
    data = b"".join(json.dumps(d).encode() + b"\n" for d in make_docs(50, seed=3, prefix="g"))
    name = "landing-gone/dt=2026-01-07/part-0.jsonl"
    blob = gcs.bucket.blob(name)
    blob.upload_from_string(data)
    chunk = Chunk("t", gs(name), "jsonl", planned=Planned(len(data),
                                                          f"generation {blob.generation}"))
    assert len(list(read_chunk(chunk))) == 50

    def gone(self: Any, *args: Any, **kwargs: Any) -> bytes:
        raise NotFound("No such object")

    with monkeypatch.context() as mp:
        mp.setattr(storage.Blob, "download_as_bytes", gone)
        [(item, position)] = list(read_chunk(chunk))
    assert position == 0 and item.reason.startswith(  # type: ignore[union-attr]
        f"unreadable jsonl file: {gs(name)}: InputChanged: replaced or deleted while it "
        f"was read: generation {blob.generation} listed at planning no longer exists")
    blob.delete()
    [(item, position)] = list(read_chunk(chunk))
    assert position == 0 and item.reason.startswith(  # type: ignore[union-attr]
        f"unreadable jsonl file: {gs(name)}: InputChanged: replaced or deleted since "
        f"planning: generation {blob.generation} listed at planning no longer exists")


class _Payload:
    """Unpickling this runs code: creates ``marker``. A verified registry never does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_tampered_model_on_gcs_is_refused(
    gcs: Gcs, landing: Landing, trained: tuple[Any, dict[str, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, name = gs("registry-tampered"), "tampered"
    _register(root, name, trained)
    marker = tmp_path / "payload-ran"
    gcs.bucket.blob(f"registry-tampered/{name}/1/model.joblib").upload_from_string(
        pickle.dumps(_Payload(marker)))

    reg = ModelRegistry(root)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.load(reg.resolve(name))
    assert not marker.exists()

    rc, out, err = _run_cli([
        "score", "--date", DAY, "--input-root", gs("landing"), "--registry", root,
        "--model", name, "--db", f"sqlite:///{tmp_path}/t.db",
        "--output-dir", gs("out-tampered"),
    ], capsys)
    assert rc == EXIT_ERROR, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "sha256" in err and f"{name}:1" in err, err
    assert not marker.exists()
    assert gcs.names("out-tampered/") == []


# The score is compared within SCORE_TOLERANCE rather than rounded in SQL: SQLite's
# round() and PostgreSQL's numeric round() disagree in the last digit for some values.
ROW = ("SELECT doc_id, tranche, label, score, top_k::text, position, metadata::text "
       "FROM predictions ORDER BY doc_id")
ROW_SQLITE = ("SELECT doc_id, tranche, label, score, top_k, position, metadata "
              "FROM predictions ORDER BY doc_id")
SCORE_TOLERANCE = 1e-9


def _rows_and_scores(rows: Any) -> tuple[list[tuple[Any, ...]], list[float]]:
    """The rows with the score left out (compared exactly), and the scores."""
    exact = [(r[0], r[1], r[2], json.loads(r[4]), r[5], json.loads(r[6]) if r[6] else None)
             for r in rows]
    return exact, [float(r[3]) for r in rows]


@pytest.mark.postgres
def test_gcs_into_postgresql_gives_the_rows_of_the_same_run_on_local_paths(
    gcs: Gcs, landing: Landing, registry: ModelRef, tmp_path: Path, pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run_cli([
        "score", "--date", DAY, "--input-root", gs("landing"), "--registry", gs("registry"),
        "--model", MODEL, "--db", pg_url, "--output-dir", gs("out-pg"),
    ], capsys)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    local_registry = tmp_path / "registry"
    for name in gcs.names(f"registry/{MODEL}/"):
        target = local_registry / name.split("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gcs.download(name))
    db = tmp_path / "local.db"
    rc, out, err = _run_cli([
        "score", "--date", DAY, "--input-root", landing.local_root, "--registry",
        str(local_registry), "--model", MODEL, "--db", f"sqlite:///{db}", "--output-dir",
        str(tmp_path / "out"),
    ], capsys)
    assert rc == 0, err
    import psycopg

    with psycopg.connect(pg_url) as conn:
        remote, remote_scores = _rows_and_scores(conn.execute(ROW).fetchall())
    with sqlite3.connect(db) as conn:
        local, local_scores = _rows_and_scores(conn.execute(ROW_SQLITE).fetchall())
    assert len(remote) == len(landing.valid_ids) and remote == local
    assert remote_scores == pytest.approx(local_scores, rel=0, abs=SCORE_TOLERANCE)
    parquet = [r for n in gcs.names(f"out-pg/dt={DAY}/") if n.endswith(".parquet")
               for r in pq.read_table(io.BytesIO(gcs.download(n))).to_pylist()]
    assert sorted((r["doc_id"], r["label"], r["position"]) for r in parquet) == sorted(
        (r[0], r[2], r[4]) for r in local)


def test_the_ledger_fingerprint_follows_gcs_generations(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The same bytes uploaded again are a new object generation: the tranche is
    rescored, while an untouched tranche is skipped."""
    data = b"".join(json.dumps(d).encode() + b"\n" for d in make_docs(30, seed=3, prefix="gen"))
    blob = gcs.bucket.blob("landing-gen/dt=2026-01-04/a.jsonl")
    blob.upload_from_string(data)
    common = ["--date", "2026-01-04", "--input-root", gs("landing-gen"), "--registry",
              gs("registry"), "--model", MODEL, "--db", f"sqlite:///{tmp_path}/g.db"]
    rc, out, err = _run_cli(["score", *common, "--output-dir", gs("out-gen")], capsys)
    assert rc == 0, err
    rc, out, _ = _run_cli(["plan", *common], capsys)
    assert rc == 0 and "skipped" in out.splitlines()[0]
    import datetime as dt

    from landing.tranches import plan_tranches

    [before] = plan_tranches(gs("landing-gen"), [dt.date(2026, 1, 4)])
    gcs.bucket.blob("landing-gen/dt=2026-01-04/a.jsonl").upload_from_string(data)  # same bytes
    [after] = plan_tranches(gs("landing-gen"), [dt.date(2026, 1, 4)])
    assert before.files[0].fingerprint.startswith("generation ")
    assert before.files[0].fingerprint != after.files[0].fingerprint
    assert before.files[0].size == after.files[0].size
    rc, out, _ = _run_cli(["plan", *common], capsys)
    assert rc == 0 and "would run" in out.splitlines()[0] and "changed" in out.splitlines()[0]


def test_a_rescore_with_another_batch_size_leaves_each_record_in_one_parquet_object(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The rescore's batches are named differently: the first run's objects are removed
    when it takes the tranche, not left beside its own."""
    docs = list(make_docs(60, seed=4, prefix="rescore"))
    gcs.bucket.blob(f"landing-rescore/dt={DAY}/a.jsonl").upload_from_string(
        b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    db = tmp_path / "r.db"
    common = ["--date", DAY, "--input-root", gs("landing-rescore"), "--registry",
              gs("registry"), "--model", MODEL, "--db", f"sqlite:///{db}", "--output-dir",
              gs("out-rescore")]
    rc, _, err = _run_cli(["score", *common, "--batch-size", "7"], capsys)
    assert rc == 0, err
    rc, _, err = _run_cli(["score", *common, "--force", "--batch-size", "25"], capsys)
    assert rc == 0, err
    rows = [r for n in gcs.names(f"out-rescore/dt={DAY}/") if n.endswith(".parquet")
            for r in pq.read_table(io.BytesIO(gcs.download(n))).to_pylist()]
    with sqlite3.connect(db) as conn:
        (last,) = conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC").fetchone()
    assert sorted(r["doc_id"] for r in rows) == sorted(d["id"] for d in docs)
    assert {r["run_id"] for r in rows} == {last}


def test_folder_placeholder_objects_are_no_input_files(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A console-made folder (a zero-byte object named ``x/``): the tranche folder's own
    is no entry, one below it a subfolder; the summary names each entry."""
    day, empty = "2026-01-05", "2026-01-06"
    for name in ("landing-ph/", f"landing-ph/dt={day}/", f"landing-ph/dt={day}/archive/",
                 f"landing-ph/dt={empty}/", "landing-ph/other/"):
        gcs.bucket.blob(name).upload_from_string(b"")
    gcs.bucket.blob(f"landing-ph/dt={day}/a.jsonl").upload_from_string(b"".join(
        json.dumps(d).encode() + b"\n" for d in make_docs(10, seed=6, prefix="ph")))
    import datetime as dt

    from landing.tranches import SUBFOLDER, Unscored, plan_tranches, unscored_entries

    plan, missing = plan_tranches(gs("landing-ph"), [dt.date(2026, 1, 5), dt.date(2026, 1, 6)])
    assert [f.path for f in plan.files] == [gs("landing-ph", f"dt={day}", "a.jsonl")]
    assert plan.unscored == [Unscored(gs("landing-ph", f"dt={day}", "archive/"), SUBFOLDER)]
    assert plan.refused == [] and not plan.missing
    assert "is empty" in missing.missing_reason
    assert (missing.files, missing.unscored) == ([], [])
    assert [u.path for u in unscored_entries(gs("landing-ph"))] == [gs("landing-ph", "other/")]
    rc, out, err = _run_cli([
        "score", "--date", day, "--input-root", gs("landing-ph"), "--registry",
        gs("registry"), "--model", MODEL, "--db", f"sqlite:///{tmp_path}/ph.db",
        "--output-dir", gs("out-ph")], capsys)
    assert rc == 0, err
    assert f"{day}    ignored 1 file(s) that are not input: archive/" in out.splitlines(), out


def test_an_object_name_holding_a_backslash_is_planned_and_read(
    gcs: Gcs, registry: ModelRef, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Objects are listed as they are named (Beam's ``*`` pattern matches no backslash,
    which left such an object out of the plan without a word): its records are scored."""
    import datetime as dt

    from landing.tranches import plan_tranches

    day = "2026-01-07"
    docs = list(make_docs(6, seed=7, prefix="bs"))
    gcs.bucket.blob(f"landing-bs/dt={day}/x\\y.jsonl").upload_from_string(b"".join(
        json.dumps(d).encode() + b"\n" for d in docs[:3]))
    gcs.bucket.blob(f"landing-bs/dt={day}/ok.jsonl").upload_from_string(b"".join(
        json.dumps(d).encode() + b"\n" for d in docs[3:]))
    [plan] = plan_tranches(gs("landing-bs"), [dt.date(2026, 1, 7)])
    assert sorted(f.path.rsplit("/", 1)[1] for f in plan.files) == ["ok.jsonl", "x\\y.jsonl"]
    assert all(f.fingerprint.startswith("generation ") and f.size > 0 for f in plan.files)
    rc, out, err = _run_cli([
        "score", "--date", day, "--input-root", gs("landing-bs"), "--registry",
        gs("registry"), "--model", MODEL, "--db", f"sqlite:///{tmp_path}/bs.db",
        "--output-dir", gs("out-bs")], capsys)
    assert rc == 0, err
    db = sqlite3.connect(tmp_path / "bs.db")
    assert sorted(r[0] for r in db.execute("SELECT doc_id FROM predictions")) == \
        sorted(d["id"] for d in docs)


def test_one_storage_client_serves_a_threads_reads(gcs: Gcs) -> None:
    """Beam makes a GcsIO (a storage client and its connection) per open; planned reads
    share one per process and thread."""
    import threading

    from landing.gcs import shared_gcsio

    first = shared_gcsio(f"gs://{BUCKET}/a.jsonl")
    assert shared_gcsio(f"gs://{BUCKET}/other/b.jsonl") is first
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(shared_gcsio(f"gs://{BUCKET}/c")))
    thread.start()
    thread.join()
    assert other and other[0] is not first
