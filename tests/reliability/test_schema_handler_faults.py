"""The custom-resource handler with almost no time left: it must report failure inside the
Lambda's budget, with a short, secret-free message."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from conversations.cfn_handler import MAX_REASON_CHARS, SchemaError, handler
from devtools.lambda_context import LambdaContext


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections on loopback and never says a word: a database that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("remaining_ms", [9_000, 20_000])
def test_a_hanging_database_fails_within_the_remaining_budget(
    silent_server: int, remaining_ms: int, caplog: pytest.LogCaptureFixture
) -> None:
    password = "hang-pw-" + "s" * 16
    with mock_aws():
        sm = boto3.client("secretsmanager")
        master = sm.create_secret(
            Name="m",
            SecretString=json.dumps(
                {
                    "host": "127.0.0.1",
                    "port": silent_server,
                    "dbname": "ragdb",
                    "username": "raguser",
                    "password": password,
                }
            ),
        )["ARN"]
        app = sm.create_secret(Name="a", SecretString=json.dumps({"username": "app", "password": "app-pw-1"}))["ARN"]
        context = LambdaContext(remaining_ms)
        started = time.monotonic()
        with pytest.raises(SchemaError) as failure:
            handler(
                {
                    "RequestType": "Update",
                    "PhysicalResourceId": "conversations-schema:ragdb",
                    "ResourceProperties": {"MasterSecretArn": master, "AppSecretArn": app, "SslMode": "disable"},
                },
                context,
            )
        elapsed = time.monotonic() - started
    assert elapsed * 1000 < remaining_ms - 2_000, f"took {elapsed:.1f} s of a {remaining_ms / 1000:.0f} s budget"
    message = str(failure.value)
    assert len(message) <= MAX_REASON_CHARS and len(json.dumps({"Reason": message})) < 4096
    assert "cannot reach or use database 127.0.0.1" in message
    assert password not in message and password not in caplog.text and "app-pw-1" not in caplog.text
