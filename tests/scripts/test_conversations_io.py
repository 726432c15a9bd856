"""Importers and export against a real PostgreSQL; DynamoDB through moto."""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from conversations.store import Store
from scripts import conversations_io as cio
from tests.support.service import EMBEDDING_DIMENSION, MigratedDatabase

ROOT = Path(__file__).resolve().parents[2]


def legacy_json(tmp_path: Path, conversations: dict[str, Any]) -> Path:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(conversations))
    return path


LEGACY = {
    "conv-a": {
        "title": "Tuning autovacuum",
        "created_at": "2024-03-01T10:00:00",
        "updated_at": "2024-03-01T10:05:00Z",
        "settings": {"model": "gpt-4", "temperature": 0.2},
        "messages": [
            {"role": "user", "content": "How do I tune autovacuum?"},
            {
                "role": "assistant",
                "content": "Start with scale factors…",
                "citations": [{"doc": "pg.pdf", "page": 3}],
                "feedback": "up",
            },
        ],
    },
    "conv-b": {
        "title": "Empty",
        "created_at": "2024-03-02T09:00:00+02:00",
        "updated_at": "2024-03-02T09:00:00+02:00",
        "messages": [],
        "settings": None,
    },
}


def import_json(store: Store, path: Path, **kw: Any) -> Any:
    return cio.run_import(
        store, "json", cio.from_json(path), batch_size=kw.pop("batch_size", 2), strict=kw.pop("strict", False)
    )


def test_json_import_keeps_ids_times_settings_and_extra_keys(store: Store, tmp_path: Path) -> None:
    report = import_json(store, legacy_json(tmp_path, LEGACY))
    assert (report.conversations_read, report.messages_read) == (2, 2)
    assert (report.imported_conversations, report.imported_messages, report.skipped) == (2, 2, [])
    assert report.verified
    conv = store.get_conversation("conv-a")
    assert conv.title == "Tuning autovacuum" and conv.settings == {"model": "gpt-4", "temperature": 0.2}
    assert conv.created_at == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert conv.updated_at == datetime(2024, 3, 1, 10, 5, tzinfo=UTC)
    assert [m.seq for m in conv.messages] == [1, 2] and conv.message_count == 2
    assert conv.messages[1].metadata == {"citations": [{"doc": "pg.pdf", "page": 3}], "feedback": "up"}
    # The store's hot paths work on imported data: recent list order and search.
    assert [c.conversation_id for c in store.list_conversations().items] == ["conv-b", "conv-a"]
    assert [h.conversation_id for h in store.search("autovacuum")] == ["conv-a"]


def test_reimport_imports_nothing_twice(store: Store, tmp_path: Path) -> None:
    path = legacy_json(tmp_path, LEGACY)
    import_json(store, path)
    again = import_json(store, path)
    assert (again.imported_conversations, again.imported_messages, again.already_present) == (0, 0, 2)
    assert store.get_conversation("conv-a").message_count == 2
    assert "already present (left as they were): 2" in again.render()


def test_malformed_records_are_skipped_with_their_location(store: Store, tmp_path: Path) -> None:
    bad = {
        **LEGACY,
        "bad-role": {
            "title": "x",
            "created_at": "2024-01-01T00:00:00",
            "updated_at": "2024-01-01T00:00:00",
            "messages": [{"role": "wizard", "content": "hi"}],
        },
        "bad-time": {"title": "x", "created_at": "yesterday", "messages": []},
        "nul": {"title": "x", "created_at": "2024-01-01T00:00:00", "messages": [{"role": "user", "content": "a\x00b"}]},
        "x" * 300: {"title": "too long id", "created_at": "2024-01-01T00:00:00", "messages": []},
        "not-object": ["nope"],
    }
    report = import_json(store, legacy_json(tmp_path, bad))
    reasons = {b.where.split(": conversation ")[1].split(",")[0]: b.reason for b in report.skipped}
    assert report.imported_conversations == 2 and len(report.skipped) == 5
    assert "unknown role 'wizard'" in reasons["'bad-role'"]
    assert "not an ISO 8601 time" in reasons["'bad-time'"]
    assert "NUL" in reasons["'nul'"]
    assert "must be an object" in reasons["'not-object'"]
    assert any("1-255 characters" in r for r in reasons.values())
    assert any("message 0" in b.where for b in report.skipped)
    assert "skipped as invalid: 5" in report.render()


def test_strict_stops_at_the_first_bad_record_and_says_what_was_committed(store: Store, tmp_path: Path) -> None:
    records = {"ok-1": LEGACY["conv-a"], "bad": {"created_at": "never"}, "ok-2": LEGACY["conv-b"]}
    report = import_json(store, legacy_json(tmp_path, records), strict=True)
    assert report.stopped_early and report.imported_conversations == 1
    assert store.get_conversation("ok-1").message_count == 2
    assert "the records before it are committed" in report.render()


def make_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, created_at TEXT, updated_at TEXT, metadata TEXT);
        CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT, role TEXT, content TEXT, created_at TEXT,
                               metadata TEXT);
    """)
    db.execute(
        "INSERT INTO sessions VALUES ('s1', 'First', '2024-05-01T08:00:00', '2024-05-01T08:10:00', "
        '\'{"user": "123"}\')'
    )
    db.execute("INSERT INTO sessions VALUES ('s2', NULL, '2024-05-02T08:00:00', NULL, NULL)")
    db.executemany(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("m2", "s1", "assistant", "Hi! How can I help?", "2024-05-01T08:00:05", '{"ip": "1.2.3.4"}'),
            ("m1", "s1", "user", "Hello", "2024-05-01T08:00:00", None),
            ("m3", "s2", "user", "Second session", "2024-05-02T08:00:00", "not json"),
            ("m4", "ghost", "user", "orphan", "2024-05-02T08:00:00", None),
        ],
    )
    db.commit()
    db.close()


def test_sqlite_import(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    make_sqlite(path)
    report = cio.run_import(store, "sqlite", cio.from_sqlite(path), batch_size=10, strict=False)
    assert report.imported_conversations == 1 and report.imported_messages == 2
    wheres = " ".join(b.where for b in report.skipped)
    assert "id='m4'" in wheres and "id='m3'" in wheres  # orphan, and bad metadata JSON
    conv = store.get_conversation("s1")
    assert [m.content for m in conv.messages] == ["Hello", "Hi! How can I help?"]
    assert conv.metadata == {"user": "123"}
    assert conv.messages[1].metadata == {"ip": "1.2.3.4", "source_message_id": "m2"}


@pytest.fixture
def dynamodb_table() -> Iterator[str]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName="conversations",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
        )
        table = boto3.resource("dynamodb", region_name="eu-west-1").Table("conversations")
        with table.batch_writer() as batch:
            for n in range(30):  # enough items to page with a small scan page
                batch.put_item(
                    Item={
                        "PK": "USER#alice",
                        "SK": f"CONV#c{n:02d}",
                        "title": f"Contract {n}",
                        "filter_values": {"documents": ["a.pdf"]},
                        "is_active": True,
                        "createdAt": "2025-01-01T00:00:00Z",
                        "updatedAt": "2025-01-02T00:00:00Z",
                    }
                )
                for m in range(3):
                    batch.put_item(
                        Item={
                            "PK": "USER#alice",
                            "SK": f"MSG#c{n:02d}#m{m}",
                            "role": "user" if m % 2 == 0 else "assistant",
                            "content": f"message {m} of c{n:02d} " + "x" * 1000,
                            "createdAt": f"2025-01-01T00:00:0{m}Z",
                            "feedback": "up" if m == 1 else None,
                            "metadata": {"tokens": m * 10},
                        }
                    )
            batch.put_item(
                Item={
                    "PK": "USER#bob",
                    "SK": "MSG#lost#m0",
                    "role": "user",
                    "content": "orphan",
                    "createdAt": "2025-01-01T00:00:00Z",
                }
            )
            batch.put_item(Item={"PK": "ORG#x", "SK": "CONV#weird", "title": "bad key"})
        yield "conversations"


def test_dynamodb_import_keeps_users_and_orders_messages(store: Store, dynamodb_table: str) -> None:
    report = cio.run_import(
        store,
        "dynamodb",
        cio.from_dynamodb(dynamodb_table, region="eu-west-1", endpoint_url=None, page_size=10),
        batch_size=7,
        strict=False,
    )
    assert report.imported_conversations == 30 and report.imported_messages == 90
    assert len(report.skipped) == 2
    conv = store.get_conversation("c07", user_id="alice")
    assert conv.user_id == "alice" and conv.metadata == {"filter_values": {"documents": ["a.pdf"]}, "is_active": True}
    assert [m.metadata["source_message_id"] for m in conv.messages] == ["m0", "m1", "m2"]
    assert conv.messages[1].metadata["feedback"] == "up" and conv.messages[1].metadata["tokens"] == 10
    assert len(store.list_conversations(user_id="alice", limit=100).items) == 30


def test_export_then_import_reproduces_everything_exactly(
    store: Store, tmp_path: Path, clean_db: MigratedDatabase
) -> None:
    from conversations.models import NewMessage

    vec = [0.5] * EMBEDDING_DIMENSION
    store.create_conversation(
        conversation_id="r1",
        user_id="u1",
        title="Round trip",
        settings={"s": [1, 2]},
        metadata={"m": {"deep": True}},
        messages=[
            NewMessage("system", "be exact"),
            NewMessage("user", "ünïcødé 😀 " * 100),
            NewMessage("assistant", "x" * 2_000_000, {"citations": [1]}, vec),
        ],
    )
    store.create_conversation(conversation_id="r2", title=None)
    before = snapshot(clean_db)
    out = tmp_path / "export.json"
    with out.open("w") as handle:
        assert cio.export(store, handle, user_id=None) == 2
    with psycopg.connect(clean_db.admin, autocommit=True) as conn:
        conn.execute("TRUNCATE conversations CASCADE")
    report = import_json(store, out)
    assert report.imported_conversations == 2 and report.skipped == []
    assert snapshot(clean_db) == before


def test_export_of_one_user(store: Store, tmp_path: Path) -> None:
    store.create_conversation(conversation_id="mine", user_id="u1")
    store.create_conversation(conversation_id="theirs", user_id="u2")
    out = tmp_path / "u1.json"
    with out.open("w") as handle:
        cio.export(store, handle, user_id="u1")
    assert list(json.loads(out.read_text())) == ["mine"]


def snapshot(db: MigratedDatabase) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(db.admin) as conn:
        conversations = conn.execute(
            "SELECT conversation_id, user_id, title, settings, metadata, created_at, updated_at, message_count"
            " FROM conversations ORDER BY conversation_id"
        ).fetchall()
        messages = conn.execute(
            "SELECT conversation_id, seq, role, md5(content), length(content), metadata, embedding::text, created_at"
            " FROM messages ORDER BY conversation_id, seq"
        ).fetchall()
    return conversations, messages


def test_cli_uses_the_service_database_settings_and_reports(clean_db: MigratedDatabase, tmp_path: Path) -> None:
    path = legacy_json(tmp_path, {**LEGACY, "broken": {"created_at": "no"}})
    env = {
        **os.environ,
        "DATABASE_URL": clean_db.app,
        "EMBEDDING_DIMENSION": str(EMBEDDING_DIMENSION),
        "API_TOKEN": "unused-by-the-tool-but-required",
    }
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "conversations_io.py"), "import", "json", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr  # done, with one record skipped
    assert "2 conversations, 2 messages imported" in run.stdout
    assert "conversation 'broken'" in run.stdout
    assert "importing" in run.stderr  # progress
    out = tmp_path / "out.json"
    exported = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "conversations_io.py"), "export", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    assert set(json.loads(out.read_text())) == {"conv-a", "conv-b"}
    assert not out.with_suffix(".json.partial").exists()


def test_cli_refuses_a_file_that_is_not_the_format(clean_db: MigratedDatabase, tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    env = {**os.environ, "DATABASE_URL": clean_db.app, "API_TOKEN": "unused-by-the-tool-but-required"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "conversations_io.py"), "import", "json", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "expected a JSON object keyed by conversation id" in run.stderr


# ---------------------------------------------------------------- hostile and huge sources

GOOD_MESSAGE = '{"role": "user", "content": "fine"}'
T = '"created_at": "2024-01-01T00:00:00Z"'


def _conversation(body: str) -> str:
    return "{" + T + ', "messages": [' + body + "]}"


BAD_SOURCES = {
    "year-0": '{"created_at": "0000-01-01T00:00:00"}',
    "epoch-huge": '{"created_at": 1e20}',
    "epoch-nan": '{"created_at": NaN}',
    "message-time-inf": _conversation('{"role": "user", "content": "x", "created_at": Infinity}'),
    "metadata-nan": _conversation('{"role": "user", "content": "x", "metadata": {"score": NaN}}'),
    "embedding-nan": _conversation('{"role": "user", "content": "x", "embedding": [NaN, 1, 1, 1, 1, 1, 1, 1]}'),
    "embedding-wrong-dimension": _conversation('{"role": "user", "content": "x", "embedding": [1, 2, 3]}'),
    "embedding-float32-overflow": _conversation(
        '{"role": "user", "content": "x", "embedding": [1e39, 1, 1, 1, 1, 1, 1, 1]}'
    ),
    "surrogate-content": _conversation('{"role": "user", "content": "\\ud800"}'),
    "surrogate-title": '{"title": "\\udfff", ' + T + "}",
    "surrogate-metadata-key": _conversation('{"role": "user", "content": "x", "metadata": {"\\ud800": 1}}'),
    "duplicate-key": _conversation('{"role": "user", "role": "assistant", "content": "x"}'),
    "duplicate-top-key": '{"title": "a", "title": "b", ' + T + "}",
    "..": "{" + T + "}",
    "zero\u200bwidth": "{" + T + "}",
}


def conversation_named(where: str) -> str:
    """The conversation id a skipped record's ``where`` names."""
    found = re.search(r"conversation ('.*')(, message \d+)?$", where)
    assert found is not None, where
    return str(ast.literal_eval(found.group(1)))


def test_every_kind_of_bad_json_record_is_skipped_and_reported_never_a_traceback(store: Store, tmp_path: Path) -> None:
    good = '"good": ' + _conversation(GOOD_MESSAGE)
    text = "{\n" + ",\n".join([good] + [f"{json.dumps(k)}: {v}" for k, v in BAD_SOURCES.items()]) + "\n}\n"
    path = tmp_path / "hostile.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")

    report = import_json(store, path, batch_size=100)

    assert report.imported_conversations == 1 and report.verified
    skipped = {conversation_named(bad.where): bad.reason for bad in report.skipped}
    assert set(skipped) == set(BAD_SOURCES), skipped
    for where in (bad.where for bad in report.skipped):
        assert "line " in where  # each with where it is in the file
    assert "duplicate key 'role'" in skipped["duplicate-key"]
    assert "out of range" in skipped["epoch-huge"] and "out of range" in skipped["epoch-nan"]
    assert "dimensions" in skipped["embedding-wrong-dimension"]
    assert "surrogate" in skipped["surrogate-content"]


def test_a_syntax_error_stops_the_import_where_it_is_and_keeps_what_came_before(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"one": ' + _conversation(GOOD_MESSAGE) + ',\n"two": {"title": oops}}')
    report = import_json(store, path)
    assert report.imported_conversations == 1
    assert report.source_error is not None and "line 2" in report.source_error
    assert "stopped: " in report.render()


def test_sqlite_messages_whose_session_id_is_null_are_reported_as_orphans(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, created_at TEXT, updated_at TEXT, metadata TEXT);"
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id TEXT, role TEXT, content TEXT,"
        " created_at TEXT, metadata TEXT);"
        "INSERT INTO sessions VALUES ('s1', 't', '2024-01-01T00:00:00', NULL, NULL);"
        "INSERT INTO messages VALUES (1, 's1', 'user', 'hi', '2024-01-01T00:00:01', NULL);"
        "INSERT INTO messages VALUES (2, NULL, 'user', 'lost', '2024-01-01T00:00:02', NULL);"
        "INSERT INTO messages VALUES (3, 'nope', 'user', 'lost too', '2024-01-01T00:00:03', NULL);"
    )
    db.commit()
    db.close()
    report = cio.run_import(store, "sqlite", cio.from_sqlite(path), batch_size=10, strict=False)
    reasons = {bad.where: bad.reason for bad in report.skipped}
    assert reasons == {
        "memory.db: messages row id=2": "its session_id is NULL",
        "memory.db: messages row id=3": "its session_id matches no session",
    }
    assert report.imported_messages == 1


def test_a_json_export_is_read_as_a_stream_in_constant_memory(tmp_path: Path) -> None:
    """Reading a 120 MB file keeps memory near one conversation's size (json.load holds the
    whole file several times over). Measured in a child process: its peak RSS (VmHWM, which
    unlike ru_maxrss does not carry the parent's peak across fork and exec)."""
    path = tmp_path / "big.json"
    message = json.dumps({"role": "assistant", "content": "w" * 4000})
    conversation = _conversation(",".join([message] * 100))  # ~400 KB each
    with path.open("w") as handle:
        handle.write("{")
        for i in range(300):
            handle.write(("," if i else "") + f'\n"c{i}": ' + conversation)
        handle.write("}")
    size_mb = path.stat().st_size / 1e6
    assert size_mb > 100
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from scripts.conversations_io import from_json\n"
        "n = sum(1 for r in from_json(Path(sys.argv[1])) if not isinstance(r, Exception))\n"
        "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "print(n, int(hwm.split()[1]) // 1024)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300, check=True
    )
    count, peak_mb = (int(v) for v in run.stdout.split())
    assert count == 300
    assert peak_mb < 100, f"peak RSS {peak_mb} MB reading a {size_mb:.0f} MB file"


def test_import_shows_progress_through_the_file(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = legacy_json(tmp_path, LEGACY)
    import_json(store, path)
    err = capsys.readouterr().err
    assert "100%" in err and "2 conversations" in err


# --- the importer and export as a security reviewer would try them ---------------------------------


def test_export_follows_no_planted_link_and_is_readable_by_its_owner_only(store: Store, tmp_path: Path) -> None:
    """The export once wrote through a pre-planted FILE.partial symlink, world-readable (0644)."""
    from scripts.transfer.cli import _export_to_file

    import_json(store, legacy_json(tmp_path, LEGACY))
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "out.json"
    (tmp_path / "out.json.partial").symlink_to(victim)
    assert _export_to_file(store, target, None) == 2
    assert victim.read_text() == "keep me"
    assert set(json.loads(target.read_text())) == {"conv-a", "conv-b"}
    assert target.stat().st_mode & 0o777 == 0o600
    # A link at the target itself is replaced, not written through.
    linked = tmp_path / "linked.json"
    linked.symlink_to(victim)
    _export_to_file(store, linked, None)
    assert victim.read_text() == "keep me" and not linked.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and not p.is_symlink()]


def test_a_sqlite_file_name_is_taken_literally(store: Store, tmp_path: Path) -> None:
    """'#', '?' or '%' in the name once opened a different file, read-write."""
    odd = tmp_path / "mem#1?mode=rwc%41.db"
    make_sqlite(odd)
    before = sorted(p.name for p in tmp_path.iterdir())
    report = cio.run_import(store, "sqlite", cio.from_sqlite(odd), batch_size=10, strict=False)
    assert report.imported_conversations == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no other file was opened or created"


@pytest.mark.parametrize("user_id", ["", "a\x7fb", "tab\there", "x" * 256, "用户"])
def test_a_user_id_the_api_cannot_address_is_refused(store: Store, tmp_path: Path, user_id: str) -> None:
    conversation: dict[str, Any] = {**json.loads(json.dumps(LEGACY["conv-a"])), "user_id": user_id}
    report = import_json(store, legacy_json(tmp_path, {"owned": conversation}))
    assert report.imported_conversations == 0 and len(report.skipped) == 1
    assert "user_id" in report.skipped[0].reason


def test_a_corrupt_sqlite_file_is_reported_not_a_traceback(store: Store, tmp_path: Path) -> None:
    corrupt = tmp_path / "memory.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    report = cio.run_import(store, "sqlite", cio.from_sqlite(corrupt), batch_size=10, strict=False)
    assert report.source_error and "DatabaseError" in report.source_error
    assert report.imported_conversations == 0


def test_records_read_before_a_source_fails_are_imported(store: Store, tmp_path: Path) -> None:
    """A source failing half-way once lost the batch it was filling, with a traceback."""
    good = list(cio.from_json(legacy_json(tmp_path, LEGACY)))

    def failing() -> Iterator[Any]:
        yield from good
        raise OSError("the disk went away")

    report = cio.run_import(store, "json", failing(), batch_size=10, strict=False)
    assert report.imported_conversations == 2
    assert report.source_error and "cannot be read after 2 records: OSError: the disk went away" in report.source_error
