"""Configuration from the environment, validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from conversations.settings import LOCAL_DEV_TOKEN, Settings, SettingsError
from conversations.tls import RDS_CA_BUNDLE

TOKEN = "a-real-token-of-some-length"


def test_no_database_means_embedded_with_a_local_token() -> None:
    settings = Settings.from_env({})
    assert settings.embedded and settings.database_backend == "embedded-postgresql"
    assert settings.api_token == LOCAL_DEV_TOKEN
    assert settings.max_body_bytes == 16 * 1024 * 1024 and settings.embedding_dimension == 1536


def test_db_variables_as_ecs_injects_them() -> None:
    settings = Settings.from_env(
        {
            "DB_HOST": "db.example",
            "DB_PORT": "5433",
            "DB_NAME": "ragdb",
            "DB_USER": "conversations_app",
            "DB_PASSWORD": "p@ss word'",
            "API_TOKEN": TOKEN,
        }
    )
    params = conninfo_to_dict(settings.database_url or "")
    assert params["host"] == "db.example" and params["port"] == "5433" and params["dbname"] == "ragdb"
    assert params["password"] == "p@ss word'"
    # TLS is verified by default, against the RDS certificate authorities shipped with the code
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == str(RDS_CA_BUNDLE)
    assert RDS_CA_BUNDLE.is_file()
    assert not settings.embedded


def test_tls_root_and_mode_can_be_named() -> None:
    settings = Settings.from_env({**ECS_DB, "DB_SSLROOTCERT": "/etc/private-ca.pem"})
    params = conninfo_to_dict(settings.database_url or "")
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/etc/private-ca.pem"
    # An operator may still choose encryption without verification; then no CA file is passed
    params = conninfo_to_dict(Settings.from_env({**ECS_DB, "DB_SSLMODE": "require"}).database_url or "")
    assert params["sslmode"] == "require" and "sslrootcert" not in params


ECS_DB = {
    "DB_HOST": "writer.example",
    "DB_PORT": "5433",
    "DB_NAME": "ragdb",
    "DB_USER": "conversations_app",
    "DB_PASSWORD": "secret",
    "API_TOKEN": TOKEN,
}


def test_a_read_host_shares_the_writers_login_port_and_tls() -> None:
    settings = Settings.from_env({**ECS_DB, "DB_READ_HOST": "reader.example"})
    assert settings.database_read_url is not None
    params = conninfo_to_dict(settings.database_read_url)
    assert params["host"] == "reader.example" and params["port"] == "5433" and params["dbname"] == "ragdb"
    assert params["user"] == "conversations_app" and params["password"] == "secret"
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == str(RDS_CA_BUNDLE)
    assert params["application_name"] == "conversations-read"
    assert "load_balance_hosts" not in params


def test_several_read_replicas_are_balanced_by_libpq() -> None:
    settings = Settings.from_env({**ECS_DB, "DB_READ_HOST": "r1.example, r2.example"})
    assert settings.database_read_url is not None
    params = conninfo_to_dict(settings.database_read_url)
    assert params["host"] == "r1.example,r2.example" and params["load_balance_hosts"] == "random"


def test_no_read_host_means_every_read_on_the_writer() -> None:
    settings = Settings.from_env(ECS_DB)
    assert settings.database_read_url is None and not settings.db_proxy
    assert Settings.from_env({**ECS_DB, "DB_PROXY": "true"}).db_proxy


def test_database_url_wins() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:p@h/d", "DB_HOST": "ignored", "API_TOKEN": TOKEN})
    assert settings.database_url == "postgresql://u:p@h/d"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_HOST": "h", "API_TOKEN": TOKEN}, "DB_NAME, DB_USER, DB_PASSWORD must be set"),
        ({"DATABASE_URL": "postgresql://h/d"}, "API_TOKEN must be set"),
        ({"DATABASE_URL": "postgresql://h/d", "API_TOKEN": "short"}, "at least 16"),
        ({"DATABASE_URL": "postgresql://h/d", "API_TOKEN": LOCAL_DEV_TOKEN}, "placeholder"),
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"EMBEDDING_DIMENSION": "4096"}, "between 1 and 2000"),
        ({"POOL_MIN_SIZE": "5", "POOL_MAX_SIZE": "2"}, "larger than POOL_MAX_SIZE"),
        ({"POOL_TIMEOUT_SECONDS": "-1"}, "must be positive"),
        ({"STORE_THREADS": "12", "POOL_MAX_SIZE": "10"}, "STORE_THREADS \\(12\\) is larger than POOL_MAX_SIZE"),
        ({"STORE_THREADS": "0"}, "STORE_THREADS must be at least 1"),
        ({"DB_READ_HOST": "replica"}, "DB_READ_HOST needs a configured writer"),
        ({"DATABASE_READ_URL": "postgresql://r/d"}, "DATABASE_READ_URL needs a configured writer"),
        ({"DB_PROXY": "maybe"}, "DB_PROXY must be true or false"),
        ({"READ_WAIT_MS": "20000"}, "READ_WAIT_MS must be between 0 and 10000"),
    ],
)
def test_bad_configuration_is_refused_with_the_variable_named(env: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_service_refuses_to_start_on_bad_configuration() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "conversations"],
        cwd="service",
        capture_output=True,
        text=True,
        env={"DB_HOST": "h", "PATH": ""},
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: DB_NAME, DB_USER, DB_PASSWORD must be set" in result.stderr


def test_the_embedded_default_lives_in_the_checkouts_local_dir_wherever_it_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Started from service/ it once made service/.local, which the next synth packed into the assets."""
    from conversations.settings import default_local_data_dir

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo / "service")
    assert Settings.from_env({}).local_data_dir == default_local_data_dir() == repo / ".local"
    assert Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path)}).local_data_dir == tmp_path


def test_store_threads_default_to_four_or_the_pool_size_if_smaller() -> None:
    assert Settings.from_env({}).store_threads == 4
    assert Settings.from_env({"POOL_MAX_SIZE": "2"}).store_threads == 2
    assert Settings.from_env({"STORE_THREADS": "8"}).store_threads == 8


def test_the_login_is_kept_apart_from_the_connection_string() -> None:
    ecs = Settings.from_env(
        {"DB_HOST": "h", "DB_NAME": "d", "DB_USER": "app", "DB_PASSWORD": "p w'x", "API_TOKEN": TOKEN}
    )
    assert (ecs.database_user, ecs.database_password) == ("app", "p w'x")
    url = Settings.from_env({"DATABASE_URL": "postgresql://u:s%40cret@h/d", "API_TOKEN": TOKEN})
    assert (url.database_user, url.database_password) == ("u", "s@cret")
    assert Settings.from_env({}).database_user is None


def test_forwarded_headers_are_believed_only_from_the_load_balancers_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from conversations import __main__ as entry

    assert Settings.from_env({}).forwarded_allow_ips == "127.0.0.1"
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "10.40.0.0/16"}).forwarded_allow_ips == "10.40.0.0/16"
    with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS must list IP addresses or networks"):
        Settings.from_env({"FORWARDED_ALLOW_IPS": "*"})
    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: ran.update(kwargs))
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.40.0.0/16")
    assert entry.main() == 0
    assert ran["forwarded_allow_ips"] == "10.40.0.0/16" and ran["proxy_headers"] is True


def test_the_service_reports_the_version_pyproject_declares() -> None:
    import tomllib

    import conversations

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert conversations.__version__ == pyproject["project"]["version"]
