"""make restore against moto: a snapshot or a point in time becomes a prepared snapshot (the
current database snapshotted first, the master password the secret's), cdk.json names it for the
profile, and after the deploy the script names what was left behind. The deploy itself is the
template's (tests/infra/test_day_two.py); the schema resource's password re-sync is replayed on
PostgreSQL (tests/service/test_cfn_handler.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from scripts import restore
from scripts import verify_deployment as verify
from stacks.config import context_value, load_config

REGION = "eu-west-1"
STACK = "Conversations-dev-Data"
PASSWORD = "the-current-master-password"
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def session() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def cdk_json(tmp_path: Path) -> Path:
    path = tmp_path / "cdk.json"
    shutil.copy(ROOT / "cdk.json", path)
    return path


def deploy_stack(session: boto3.session.Session, values: dict[str, str], *, update: bool = False) -> None:
    """The Data stack as CloudFormation shows it: its outputs (moto keeps literal ones)."""
    template = json.dumps(
        {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in values.items()},
        }
    )
    cloudformation = session.client("cloudformation")
    if update:
        cloudformation.update_stack(StackName=STACK, TemplateBody=template)
    else:
        cloudformation.create_stack(StackName=STACK, TemplateBody=template)


def master_secret(session: boto3.session.Session) -> str:
    value = json.dumps({"username": "raguser", "password": PASSWORD, "host": "db", "port": 5432})
    return str(session.client("secretsmanager").create_secret(Name="master", SecretString=value)["ARN"])


def network(session: boto3.session.Session) -> tuple[str, str]:
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for n, zone in ((1, "a"), (2, "b"))
    ]
    session.client("rds").create_db_subnet_group(
        DBSubnetGroupName="database", DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    group = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    return "database", group


@pytest.fixture
def instance(session: boto3.session.Session) -> str:
    """A deployed dev stack with an RDS instance and a manual snapshot of it, ``nightly``."""
    subnet_group, group = network(session)
    rds = session.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="db-old",
        Engine="postgres",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        MasterUsername="raguser",
        MasterUserPassword="the-password-of-long-ago",
        StorageEncrypted=True,
        DBSubnetGroupName=subnet_group,
        VpcSecurityGroupIds=[group],
        BackupRetentionPeriod=7,
        DeletionProtection=True,
    )
    rds.create_db_snapshot(DBInstanceIdentifier="db-old", DBSnapshotIdentifier="nightly")
    deploy_stack(session, {"DatabaseInstanceId": "db-old", "MasterSecretArn": master_secret(session)})
    return "db-old"


@pytest.fixture
def cluster(session: boto3.session.Session) -> str:
    """A deployed dev stack with an Aurora Serverless v2 cluster and a snapshot of it, ``nightly``."""
    subnet_group, group = network(session)
    rds = session.client("rds")
    rds.create_db_cluster(
        DBClusterIdentifier="cluster-old",
        Engine="aurora-postgresql",
        MasterUsername="raguser",
        MasterUserPassword="the-password-of-long-ago",
        StorageEncrypted=True,
        DBSubnetGroupName=subnet_group,
        VpcSecurityGroupIds=[group],
        ServerlessV2ScalingConfiguration={"MinCapacity": 0.5, "MaxCapacity": 4},
        BackupRetentionPeriod=7,
    )
    rds.create_db_cluster_snapshot(DBClusterIdentifier="cluster-old", DBClusterSnapshotIdentifier="nightly")
    deploy_stack(session, {"DatabaseClusterId": "cluster-old", "MasterSecretArn": master_secret(session)})
    return "cluster-old"


def run(session: Any, cdk_json: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = restore.main(["--profile", "dev", *argv], session=session, cdk_json=cdk_json)
    out, err = capsys.readouterr()
    return code, out, err


def record_rds_calls(session: boto3.session.Session) -> list[tuple[str, dict[str, Any]]]:
    """Every RDS call the script makes, with its parameters (moto never shows a password back)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    session.events.register("provide-client-params.rds", record)
    return calls


def password_set_before_snapshot(calls: list[tuple[str, dict[str, Any]]], prepared: str) -> bool:
    """The prepared snapshot was taken of a database whose master password had been set to the
    secret's current one (and RDS reported it applied: the script waits for that)."""
    modified = [
        n
        for n, (op, params) in enumerate(calls)
        if op in ("ModifyDBInstance", "ModifyDBCluster") and params.get("MasterUserPassword") == PASSWORD
    ]
    snapshot = [
        n
        for n, (op, params) in enumerate(calls)
        if op in ("CreateDBSnapshot", "CreateDBClusterSnapshot")
        and prepared in (params.get("DBSnapshotIdentifier"), params.get("DBClusterSnapshotIdentifier"))
    ]
    return bool(modified) and bool(snapshot) and modified[0] < snapshot[0]


def manual_snapshots(session: boto3.session.Session) -> list[str]:
    found = session.client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return sorted(s["DBSnapshotIdentifier"] for s in found)


def test_without_a_source_it_lists_the_snapshots_and_the_window(
    session: boto3.session.Session, instance: str, cdk_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(session, cdk_json, capsys=capsys)
    assert code == 0
    assert f"{STACK}: RDS instance db-old (postgres)" in out
    assert "nightly" in out and "manual" in out
    assert "point in time:" in out and "TIME=latest" in out
    assert "SNAPSHOT=<identifier> YES=1" in out
    assert json.loads(cdk_json.read_text()) == json.loads((ROOT / "cdk.json").read_text()), "listing changes nothing"


def test_a_snapshot_restore_prepares_a_snapshot_with_the_secrets_password(
    session: boto3.session.Session, instance: str, cdk_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    calls = record_rds_calls(session)
    code, out, err = run(session, cdk_json, "--snapshot", "nightly", "--yes", "--state", str(state), capsys=capsys)
    assert code == 0, err
    rds = session.client("rds")
    snapshots = {s["DBSnapshotIdentifier"]: s for s in rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]}
    before = [name for name in snapshots if name.startswith("conversations-dev-data-before-restore-")]
    prepared = [name for name in snapshots if name.startswith("conversations-dev-data-restore-")]
    assert len(before) == 1 and len(prepared) == 1, sorted(snapshots)
    assert snapshots[before[0]]["DBInstanceIdentifier"] == "db-old", "the current database is kept first"
    # The prepared snapshot's database logs in with the master secret's password, not the snapshot's.
    assert password_set_before_snapshot(calls, prepared[0])
    # The temporary instance is gone; the stack's own is untouched.
    assert [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]] == ["db-old"]
    context = json.loads(cdk_json.read_text())["context"]
    assert context["restoreSnapshot"] == {"dev": prepared[0]}
    assert load_config(context, {}).database.restore_snapshot == prepared[0]
    assert json.loads(state.read_text()) == {"snapshot": prepared[0], "previous": "db-old"}
    for step in ("[1/3]", "[2/3]", "[3/3]", "master password", "deleting the temporary"):
        assert step in out


def test_a_point_in_time_restore_goes_through_the_same_prepared_snapshot(
    session: boto3.session.Session, instance: str, cdk_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = record_rds_calls(session)
    code, _, err = run(session, cdk_json, "--time", "latest", "--yes", capsys=capsys)
    assert code == 0, err
    prepared = json.loads(cdk_json.read_text())["context"]["restoreSnapshot"]["dev"]
    assert [op for op, _ in calls if op.startswith("Restore")] == ["RestoreDBInstanceToPointInTime"]
    assert password_set_before_snapshot(calls, prepared)


def test_an_aurora_cluster_is_restored_the_same_way(
    session: boto3.session.Session, cluster: str, cdk_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = record_rds_calls(session)
    code, _, err = run(session, cdk_json, "--snapshot", "nightly", "--yes", capsys=capsys)
    assert code == 0, err
    rds = session.client("rds")
    names = [s["DBClusterSnapshotIdentifier"] for s in rds.describe_db_cluster_snapshots()["DBClusterSnapshots"]]
    prepared = json.loads(cdk_json.read_text())["context"]["restoreSnapshot"]["dev"]
    assert prepared in names and any(n.startswith("conversations-dev-data-before-restore-") for n in names)
    assert password_set_before_snapshot(calls, prepared)
    assert [c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]] == ["cluster-old"]
    assert rds.describe_db_instances()["DBInstances"] == [], "the temporary writer is gone too"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--snapshot", "no-such-snapshot"), "no DB snapshot 'no-such-snapshot'"),
        (("--time", "2001-01-01T00:00:00Z"), "outside the restorable window"),
        (("--time", "yesterday"), "TIME must be ISO 8601"),
    ],
)
def test_a_bad_source_is_refused_before_anything_is_created(
    session: boto3.session.Session,
    instance: str,
    cdk_json: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, str],
    says: str,
) -> None:
    code, _, err = run(session, cdk_json, *argv, "--yes", capsys=capsys)
    assert code == 1 and says in err and "Traceback" not in err
    assert manual_snapshots(session) == ["nightly"]
    assert "restoreSnapshot" not in json.loads(cdk_json.read_text())["context"]


def test_a_snapshot_of_another_engine_is_refused(
    session: boto3.session.Session, instance: str, cdk_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rds = session.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="mysql",
        Engine="mysql",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="password-of-mysql",
        StorageEncrypted=True,
    )
    rds.create_db_snapshot(DBInstanceIdentifier="mysql", DBSnapshotIdentifier="mysql-nightly")
    code, _, err = run(session, cdk_json, "--snapshot", "mysql-nightly", "--yes", capsys=capsys)
    assert code == 1 and "is of mysql, the stack's database is postgres" in err


def test_without_yes_and_no_terminal_nothing_happens(
    session: boto3.session.Session,
    instance: str,
    cdk_json: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(session, cdk_json, "--snapshot", "nightly", capsys=capsys)
    assert code == 2 and "YES=1" in err
    assert "replaces the RDS instance db-old" in out, "it says what it would do"
    assert manual_snapshots(session) == ["nightly"]


def test_finish_names_the_old_database_deletion_protection_kept(
    session: boto3.session.Session, instance: str, cdk_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    assert run(session, cdk_json, "--snapshot", "nightly", "--yes", "--state", str(state), capsys=capsys)[0] == 0
    prepared = json.loads(state.read_text())["snapshot"]
    # The deploy did not happen yet: finish says so.
    code, _, err = run(session, cdk_json, "--finish", "--state", str(state), capsys=capsys)
    assert code == 1 and "did the deploy finish?" in err
    # What CloudFormation does: a new instance from the prepared snapshot; prod's old one stays.
    session.client("rds").restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier="db-new", DBSnapshotIdentifier=prepared
    )
    secret = session.client("secretsmanager").describe_secret(SecretId="master")["ARN"]
    values = {"DatabaseInstanceId": "db-new", "MasterSecretArn": secret, "RestoredFrom": prepared}
    deploy_stack(session, values, update=True)
    code, out, err = run(session, cdk_json, "--finish", "--state", str(state), capsys=capsys)
    assert code == 0, err
    assert f"RDS instance db-new restored from {prepared}" in out
    assert "the old RDS instance db-old is still available" in out
    assert "modify-db-instance --db-instance-identifier db-old --no-deletion-protection" in out


def test_cdk_json_keeps_the_other_profiles_restores(tmp_path: Path) -> None:
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"app": "x", "context": {"restoreSnapshot": "shared-by-all"}}))
    restore.record_in_cdk_json(path, "prod", "prod-restore-1")
    assert json.loads(path.read_text())["context"]["restoreSnapshot"] == {
        "dev": "shared-by-all",
        "lean": "shared-by-all",
        "prod": "prod-restore-1",
    }
    context = json.loads(path.read_text())["context"]
    assert context_value(context, "restoreSnapshot", "prod") == "prod-restore-1"
    assert context_value(context, "restoreSnapshot", "dev") == "shared-by-all"


def test_parse_time_reads_utc_and_zones() -> None:
    assert restore.parse_time("latest") is None
    assert restore.parse_time("2026-12-03T09:30:00Z") == dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)
    assert restore.parse_time("2026-12-03T10:30:00+01:00") == dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)
    assert restore.parse_time("2026-12-03 09:30") == dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)


# --- the preflight keeps a restored database -------------------------------------------------------


def preflight_restore(session: boto3.session.Session, snapshot: str | None) -> verify.Check:
    context = {"restoreSnapshot": snapshot} if snapshot else {}
    checks = verify.preflight_checks(
        verify.Aws(session), profile="dev", certificate_arn=None, docker_command=("true",), context=context
    )
    return {r.name: r for r in verify.run_checks(list(checks))}["preflight: restore"]


def test_preflight_refuses_a_deploy_that_forgets_the_restore(session: boto3.session.Session) -> None:
    deploy_stack(session, {"DatabaseInstanceId": "db-new", "RestoredFrom": "conversations-dev-data-restore-1"})
    row = preflight_restore(session, None)
    assert row.result == "FAIL" and "replace it with an empty database" in row.detail
    assert '"restoreSnapshot": {"dev": "conversations-dev-data-restore-1"}' in row.hint
    assert preflight_restore(session, "conversations-dev-data-restore-1").result == "PASS"
    again = preflight_restore(session, "conversations-dev-data-restore-2")
    assert again.result == "PASS" and "replaces" in again.detail


def test_preflight_passes_a_stack_never_restored_or_not_deployed(session: boto3.session.Session) -> None:
    row = preflight_restore(session, None)
    assert row.result == "PASS" and "not deployed yet" in row.detail
    deploy_stack(session, {"DatabaseInstanceId": "db"})
    assert preflight_restore(session, None).detail == "not a restored database"
    row = preflight_restore(session, "snap")
    assert row.result == "PASS" and "replaces" in row.detail


def test_a_restore_that_fails_half_way_leaves_no_temporary_database(
    session: boto3.session.Session, instance: str, cdk_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session.client("secretsmanager").put_secret_value(SecretId="master", SecretString=json.dumps({"username": "x"}))
    code, out, err = run(session, cdk_json, "--snapshot", "nightly", "--yes", capsys=capsys)
    assert code == 1 and "holds no password" in err and "Traceback" not in err
    assert [i["DBInstanceIdentifier"] for i in session.client("rds").describe_db_instances()["DBInstances"]] == [
        "db-old"
    ]
    assert "deleting the temporary" in out
    assert "restoreSnapshot" not in json.loads(cdk_json.read_text())["context"]
