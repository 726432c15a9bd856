#!/usr/bin/env python3
"""Restore the deployed database of a profile from a snapshot or a point in time, into the stack.

    make restore PROFILE=prod                                   # list what can be restored
    make restore PROFILE=prod SNAPSHOT=<identifier> YES=1       # a DB (Aurora: DB cluster) snapshot
    make restore PROFILE=prod TIME=2026-12-03T09:30:00Z YES=1   # a point in time (or TIME=latest)

The database stays the stack's: CloudFormation creates it from a snapshot (context
``restoreSnapshot``), moves every reference to it and deletes the old one. This script prepares
that snapshot, then ``make restore`` deploys and ends with ``--finish``:

1. snapshot the current database (``<stack>-before-restore-<time>``): nothing written since
   is lost, whatever the profile's removal policy does with the old database;
2. restore the snapshot (or the point in time) to a temporary database in the stack's subnets
   and security group, set its master password to the master secret's current one, snapshot it
   (``<stack>-restore-<time>``) and delete the temporary database. The deploy then restores a
   database whose master password the stack's secret already holds (CloudFormation applies no
   new master password to a restored Aurora cluster); the schema resource runs again on it,
   applies the migrations the snapshot predates and sets the application role's password from
   its secret;
3. write ``restoreSnapshot`` for this profile into cdk.json: keep it there (removing it would
   replace the database with an empty one; ``make preflight`` refuses that deploy).

``--finish`` checks the deployed database came from that snapshot and names what was left
behind (prod's deletion protection keeps the old database running: how to delete it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stacks import outputs
from stacks.config import PROFILES

ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = ROOT / "cdk.json"
KEY = "restoreSnapshot"
WAIT_LIMIT_S = 3 * 3600.0
FAILED_STATES = ("failed", "incompatible-restore", "incompatible-parameters", "inaccessible-encryption-credentials")
# Aurora Serverless v2 capacity of the temporary cluster's one instance (it only takes a snapshot).
TEMPORARY_ACU = {"MinCapacity": 0.5, "MaxCapacity": 4.0}


class RestoreError(RuntimeError):
    """What stops a restore, said so an operator knows what to do next."""


@dataclass
class Database:
    """The stack's database: an RDS instance, or an Aurora cluster."""

    identifier: str
    cluster: bool
    engine: str
    subnet_group: str
    security_groups: list[str]
    parameter_group: str
    instance_class: str
    master_secret_arn: str
    restored_from: str | None

    @property
    def kind(self) -> str:
        return "Aurora cluster" if self.cluster else "RDS instance"


def utc_stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%d-%H%M%S")


def parse_time(raw: str) -> dt.datetime | None:
    """``latest`` (None), or an ISO 8601 time; one without a zone is UTC."""
    if raw.strip().lower() == "latest":
        return None
    try:
        value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RestoreError(f"TIME must be ISO 8601 (2026-12-03T09:30:00Z) or latest, got {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Restore:
    """The steps, on one boto3 session; ``say`` prints progress, ``pause`` waits between polls."""

    def __init__(
        self,
        session: Any,
        profile: str,
        *,
        say: Callable[[str], None] = print,
        pause: Callable[[float], None] = time.sleep,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        poll_s: float = 30.0,
    ) -> None:
        self.rds = session.client("rds")
        self.cloudformation = session.client("cloudformation")
        self.secrets = session.client("secretsmanager")
        self.profile = profile
        self.stack = outputs.stack_names(profile).data
        self.say, self.pause, self.now, self.poll_s = say, pause, now, poll_s
        self.prefix = self.stack.lower()

    # --- what is deployed -------------------------------------------------------------------

    def database(self) -> Database:
        try:
            stack = self.cloudformation.describe_stacks(StackName=self.stack)["Stacks"][0]
        except Exception as exc:  # noqa: BLE001 - botocore's error types vary; the message is enough
            raise RestoreError(f"cannot read stack {self.stack}: {exc}; deploy PROFILE={self.profile} first") from None
        values = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        secret = values.get(outputs.MASTER_SECRET_ARN)
        if not secret:
            raise RestoreError(f"stack {self.stack} has no {outputs.MASTER_SECRET_ARN} output")
        restored = values.get(outputs.RESTORED_FROM)
        if values.get(outputs.DATABASE_CLUSTER_ID):
            cluster = self.rds.describe_db_clusters(DBClusterIdentifier=values[outputs.DATABASE_CLUSTER_ID])
            c = cluster["DBClusters"][0]
            return Database(
                identifier=c["DBClusterIdentifier"],
                cluster=True,
                engine=c["Engine"],
                subnet_group=c["DBSubnetGroup"],
                security_groups=[g["VpcSecurityGroupId"] for g in c.get("VpcSecurityGroups", [])],
                parameter_group=c.get("DBClusterParameterGroup", ""),
                instance_class="db.serverless",
                master_secret_arn=secret,
                restored_from=restored,
            )
        identifier = values.get(outputs.DATABASE_INSTANCE_ID)
        if not identifier:
            raise RestoreError(f"stack {self.stack} names no database ({outputs.DATABASE_INSTANCE_ID} output)")
        i = self.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        return Database(
            identifier=identifier,
            cluster=False,
            engine=i["Engine"],
            subnet_group=i["DBSubnetGroup"]["DBSubnetGroupName"],
            security_groups=[g["VpcSecurityGroupId"] for g in i.get("VpcSecurityGroups", [])],
            parameter_group=(i.get("DBParameterGroups") or [{}])[0].get("DBParameterGroupName", ""),
            instance_class=i["DBInstanceClass"],
            master_secret_arn=secret,
            restored_from=restored,
        )

    def snapshots(self, db: Database) -> list[dict[str, Any]]:
        """The database's snapshots, newest first: identifier, type, time, status."""
        if db.cluster:
            found = self.rds.describe_db_cluster_snapshots(DBClusterIdentifier=db.identifier)["DBClusterSnapshots"]
            key = "DBClusterSnapshotIdentifier"
        else:
            found = self.rds.describe_db_snapshots(DBInstanceIdentifier=db.identifier)["DBSnapshots"]
            key = "DBSnapshotIdentifier"
        rows = [
            {
                "identifier": s[key],
                "type": s.get("SnapshotType", ""),
                "created": s.get("SnapshotCreateTime"),
                "status": s.get("Status", ""),
            }
            for s in found
        ]
        return sorted(rows, key=lambda r: r["created"] or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)

    def window(self, db: Database) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The point-in-time window: earliest and latest restorable times."""
        if db.cluster:
            c = self.rds.describe_db_clusters(DBClusterIdentifier=db.identifier)["DBClusters"][0]
            return c.get("EarliestRestorableTime"), c.get("LatestRestorableTime")
        i = self.rds.describe_db_instances(DBInstanceIdentifier=db.identifier)["DBInstances"][0]
        latest = i.get("LatestRestorableTime")
        earliest = None
        backups = self.rds.describe_db_instance_automated_backups(DBInstanceIdentifier=db.identifier)
        for backup in backups.get("DBInstanceAutomatedBackups", []):
            earliest = backup.get("RestoreWindow", {}).get("EarliestTime") or earliest
        if earliest is None and latest is not None:
            # No window reported: the retention period back from the latest, not before the instance.
            earliest = latest - dt.timedelta(days=int(i.get("BackupRetentionPeriod") or 0))
            created = i.get("InstanceCreateTime")
            earliest = max(earliest, created) if created else earliest
        return earliest, latest

    def listing(self, db: Database) -> str:
        lines = [f"{self.stack}: {db.kind} {db.identifier} ({db.engine})"]
        if db.restored_from:
            lines.append(f"  restored earlier from {db.restored_from}")
        earliest, latest = self.window(db)
        if latest:
            start = earliest.isoformat() if earliest else "?"
            lines.append(f"  point in time: {start} .. {latest.isoformat()}   make restore TIME=<time> or TIME=latest")
        else:
            lines.append("  point in time: no automated backups")
        rows = self.snapshots(db)
        lines.append(f"  snapshots ({len(rows)}):" if rows else "  snapshots: none")
        for row in rows:
            created = row["created"].isoformat() if row["created"] else "?"
            lines.append(f"    {row['identifier']:<60} {row['type']:<10} {created}  {row['status']}")
        if rows:
            lines.append(f"  make restore PROFILE={self.profile} SNAPSHOT=<identifier> YES=1")
        return "\n".join(lines)

    # --- checks -------------------------------------------------------------------------------

    def check_snapshot(self, db: Database, snapshot: str) -> None:
        try:
            if db.cluster:
                found = self.rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot)
                s = found["DBClusterSnapshots"][0]
            else:
                s = self.rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
        except Exception:  # noqa: BLE001 - a missing snapshot raises a service error
            kind = "DB cluster snapshot" if db.cluster else "DB snapshot"
            raise RestoreError(
                f"no {kind} {snapshot!r} in this account and region; `make restore PROFILE={self.profile}` lists them"
            ) from None
        if s.get("Status") != "available":
            raise RestoreError(f"snapshot {snapshot} is {s.get('Status')}, not available yet: try again when it is")
        if s.get("Engine") != db.engine:
            raise RestoreError(f"snapshot {snapshot} is of {s.get('Engine')}, the stack's database is {db.engine}")
        if not (s.get("StorageEncrypted") if db.cluster else s.get("Encrypted")):
            raise RestoreError(f"snapshot {snapshot} is not encrypted; the stack's database must be")

    def check_time(self, db: Database, when: dt.datetime | None) -> None:
        earliest, latest = self.window(db)
        if latest is None:
            raise RestoreError(f"{db.identifier} has no automated backups to restore a point in time from")
        if when is None:
            return
        if when > latest or (earliest is not None and when < earliest):
            start = earliest.isoformat() if earliest else "?"
            raise RestoreError(f"{when.isoformat()} is outside the restorable window {start} .. {latest.isoformat()}")

    # --- the steps ----------------------------------------------------------------------------

    def prepare(self, db: Database, *, snapshot: str | None, when: dt.datetime | None) -> str:
        """Steps 1 and 2: the safety snapshot, then the prepared snapshot; returns its identifier."""
        stamp = utc_stamp(self.now())
        before = f"{self.prefix}-before-restore-{stamp}"
        self.say(f"[1/3] snapshot of the current database: {before}")
        self._snapshot(db, db.identifier, before)
        temporary = f"{self.prefix}-restore-{stamp}"
        source = f"snapshot {snapshot}" if snapshot else f"point in time {when.isoformat() if when else 'latest'}"
        self.say(f"[2/3] {source} -> temporary {db.kind} {temporary}")
        self._restore_temporary(db, temporary, snapshot=snapshot, when=when)
        try:
            self.say("      its master password := the master secret's current one")
            self._set_master_password(db, temporary, self._master_password(db))
            self.say(f"      snapshot {temporary}")
            self._snapshot(db, temporary, temporary)
        finally:
            self.say(f"      deleting the temporary {db.kind} {temporary}")
            self._delete_temporary(db, temporary)
        return temporary

    def _master_password(self, db: Database) -> str:
        try:
            raw = self.secrets.get_secret_value(SecretId=db.master_secret_arn, VersionStage="AWSCURRENT")
            password = json.loads(raw["SecretString"]).get("password")
        except Exception as exc:  # noqa: BLE001 - botocore's errors, a secret not the RDS shape
            raise RestoreError(f"cannot read the master password from {db.master_secret_arn}: {exc!r}") from None
        if not isinstance(password, str) or not password:
            raise RestoreError(f"the master secret {db.master_secret_arn} holds no password")
        return password

    def _snapshot(self, db: Database, source: str, name: str) -> None:
        if db.cluster:
            self.rds.create_db_cluster_snapshot(DBClusterIdentifier=source, DBClusterSnapshotIdentifier=name)
            self._wait(f"snapshot {name}", lambda: self._cluster_snapshot_status(name), "available")
        else:
            self.rds.create_db_snapshot(DBInstanceIdentifier=source, DBSnapshotIdentifier=name)
            self._wait(f"snapshot {name}", lambda: self._snapshot_status(name), "available")

    def _restore_temporary(self, db: Database, name: str, *, snapshot: str | None, when: dt.datetime | None) -> None:
        if db.cluster:
            common: dict[str, Any] = {
                "DBClusterIdentifier": name,
                "DBSubnetGroupName": db.subnet_group,
                "VpcSecurityGroupIds": db.security_groups,
                "ServerlessV2ScalingConfiguration": TEMPORARY_ACU,
                "DeletionProtection": False,
            }
            if db.parameter_group:
                common["DBClusterParameterGroupName"] = db.parameter_group
            if snapshot:
                self.rds.restore_db_cluster_from_snapshot(SnapshotIdentifier=snapshot, Engine=db.engine, **common)
            else:
                point = {"RestoreToTime": when} if when else {"UseLatestRestorableTime": True}
                self.rds.restore_db_cluster_to_point_in_time(SourceDBClusterIdentifier=db.identifier, **point, **common)
            # A cluster's master password is set through an instance: give it one, the smallest.
            self.rds.create_db_instance(
                DBInstanceIdentifier=f"{name}-1",
                DBClusterIdentifier=name,
                DBInstanceClass="db.serverless",
                Engine=db.engine,
                PubliclyAccessible=False,
            )
            self._wait(f"cluster {name}", lambda: self._cluster_status(name), "available")
            self._wait(f"instance {name}-1", lambda: self._instance_status(f"{name}-1"), "available")
            return
        common = {
            "DBSubnetGroupName": db.subnet_group,
            "VpcSecurityGroupIds": db.security_groups,
            "DBInstanceClass": db.instance_class,
            "PubliclyAccessible": False,
            "MultiAZ": False,
            "DeletionProtection": False,
        }
        if db.parameter_group:
            common["DBParameterGroupName"] = db.parameter_group
        if snapshot:
            self.rds.restore_db_instance_from_db_snapshot(
                DBInstanceIdentifier=name, DBSnapshotIdentifier=snapshot, **common
            )
        else:
            point = {"RestoreTime": when} if when else {"UseLatestRestorableTime": True}
            self.rds.restore_db_instance_to_point_in_time(
                SourceDBInstanceIdentifier=db.identifier, TargetDBInstanceIdentifier=name, **point, **common
            )
        self._wait(f"instance {name}", lambda: self._instance_status(name), "available")

    def _set_master_password(self, db: Database, name: str, password: str) -> None:
        """Set it, then wait until RDS has applied it (no longer pending, available again)."""
        if db.cluster:
            self.rds.modify_db_cluster(DBClusterIdentifier=name, MasterUserPassword=password, ApplyImmediately=True)
            self._wait("the new master password", lambda: self._cluster_status(name, pending=True), "available")
        else:
            self.rds.modify_db_instance(DBInstanceIdentifier=name, MasterUserPassword=password, ApplyImmediately=True)
            self._wait("the new master password", lambda: self._instance_status(name, pending=True), "available")

    def _delete_temporary(self, db: Database, name: str) -> None:
        """Delete what the restore made, step by step (a step that fails is said, the next still
        tried): a cluster only once its instance is gone (RDS refuses it before)."""
        rds = self.rds
        if db.cluster:
            instance = f"{name}-1"
            if self._try(
                instance, partial(rds.delete_db_instance, DBInstanceIdentifier=instance, SkipFinalSnapshot=True)
            ):
                gone = partial(self._gone, partial(self._instance_status, instance))
                self._wait(f"instance {instance}", gone, "deleted")
            self._try(
                name,
                partial(
                    rds.modify_db_cluster, DBClusterIdentifier=name, DeletionProtection=False, ApplyImmediately=True
                ),
                partial(rds.delete_db_cluster, DBClusterIdentifier=name, SkipFinalSnapshot=True),
            )
            return
        # Restored with deletion protection off; made sure of, as a snapshot's may carry it over.
        self._try(
            name,
            partial(rds.modify_db_instance, DBInstanceIdentifier=name, DeletionProtection=False, ApplyImmediately=True),
            partial(
                rds.delete_db_instance, DBInstanceIdentifier=name, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
            ),
        )

    def _try(self, name: str, *steps: Callable[[], Any]) -> bool:
        try:
            for step in steps:
                step()
        except Exception as exc:  # noqa: BLE001 - said, never hides the restore's own error
            if "NotFound" in type(exc).__name__ or "NotFound" in str(exc):
                return False  # never created: nothing to delete
            self.say(f"      could not delete {name} ({exc}): delete it by hand, it is billed while it runs")
            return False
        return True

    @staticmethod
    def _gone(status: Callable[[], str]) -> str:
        try:
            return status()
        except Exception as exc:
            if "NotFound" in type(exc).__name__ or "NotFound" in str(exc):
                return "deleted"
            raise

    def _instance_status(self, name: str, *, pending: bool = False) -> str:
        i = self.rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        if pending and "MasterUserPassword" in i.get("PendingModifiedValues", {}):
            return "resetting-master-credentials"
        return str(i["DBInstanceStatus"])

    def _cluster_status(self, name: str, *, pending: bool = False) -> str:
        c = self.rds.describe_db_clusters(DBClusterIdentifier=name)["DBClusters"][0]
        if pending and "MasterUserPassword" in c.get("PendingModifiedValues", {}):
            return "resetting-master-credentials"
        return str(c["Status"])

    def _snapshot_status(self, name: str) -> str:
        return str(self.rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]["Status"])

    def _cluster_snapshot_status(self, name: str) -> str:
        found = self.rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=name)
        return str(found["DBClusterSnapshots"][0]["Status"])

    def _wait(self, what: str, status: Callable[[], str], wanted: str) -> None:
        started = time.monotonic()
        last = ""
        while True:
            now = status()
            if now == wanted:
                self.say(f"      {what}: {wanted} ({time.monotonic() - started:.0f} s)")
                return
            if now in FAILED_STATES:
                raise RestoreError(f"{what} is {now}: read its events in the RDS console")
            if now != last:
                self.say(f"      {what}: {now} ...")
                last = now
            if time.monotonic() - started > WAIT_LIMIT_S:
                raise RestoreError(f"{what} still {now} after {WAIT_LIMIT_S / 3600:.0f} h")
            self.pause(self.poll_s)

    # --- after the deploy -----------------------------------------------------------------------

    def finish(self, snapshot: str | None, previous: str | None) -> str:
        """What the deploy left: the database restored from ``snapshot``, and the old one."""
        db = self.database()
        if snapshot and db.restored_from != snapshot:
            raise RestoreError(
                f"the deployed {self.stack} says it was restored from {db.restored_from or 'no snapshot'}, not "
                f"{snapshot}: did the deploy finish? Read its events (aws cloudformation describe-stack-events)"
            )
        lines = [f"{db.kind} {db.identifier} restored from {db.restored_from}; make verify PROFILE={self.profile} next"]
        if previous and previous != db.identifier:
            left = self._still_there(db, previous)
            if left:
                delete = (
                    f"aws rds modify-db-cluster --db-cluster-identifier {previous} --no-deletion-protection "
                    "--apply-immediately && aws rds delete-db-cluster "
                    f"--db-cluster-identifier {previous} --final-db-snapshot-identifier {previous}-final"
                    if db.cluster
                    else f"aws rds modify-db-instance --db-instance-identifier {previous} --no-deletion-protection "
                    "--apply-immediately && aws rds delete-db-instance "
                    f"--db-instance-identifier {previous} --final-db-snapshot-identifier {previous}-final"
                )
                lines.append(
                    f"the old {db.kind} {previous} is still {left} (deletion protection kept it, and bills it). "
                    f"Once the restored data is checked, delete it:\n  {delete}"
                )
        return "\n".join(lines)

    def _still_there(self, db: Database, identifier: str) -> str | None:
        try:
            if db.cluster:
                return self._cluster_status(identifier)
            return self._instance_status(identifier)
        except Exception:  # noqa: BLE001 - gone: DBInstanceNotFound / DBClusterNotFound
            return None


# --- cdk.json ---------------------------------------------------------------------------------------


def record_in_cdk_json(path: Path, profile: str, snapshot: str) -> None:
    """Set ``restoreSnapshot`` for ``profile`` in cdk.json's context, keeping the other profiles'."""
    document = json.loads(path.read_text())
    context = document.setdefault("context", {})
    current = context.get(KEY)
    per_profile: dict[str, str] = {}
    if isinstance(current, Mapping):
        per_profile = {str(k): str(v) for k, v in current.items()}
    elif current not in (None, ""):
        per_profile = dict.fromkeys(PROFILES, str(current))  # a plain value applied to every profile
    per_profile[profile] = snapshot
    context[KEY] = per_profile
    path.write_text(json.dumps(document, indent=2) + "\n")


# --- the command ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, session: Any = None, cdk_json: Path = CDK_JSON) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="dev", choices=PROFILES)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--snapshot", help="restore this DB snapshot (Aurora: DB cluster snapshot)")
    source.add_argument("--time", help="restore this point in time (ISO 8601, UTC unless given) or 'latest'")
    source.add_argument("--finish", action="store_true", help="after the deploy: check it, name what is left")
    parser.add_argument("--previous", help="with --finish: the database identifier before the restore")
    parser.add_argument("--state", type=Path, help="where to keep the identifiers between prepare and --finish")
    parser.add_argument("--yes", action="store_true", help="do it without asking (make restore ... YES=1)")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else the profile's)")
    args = parser.parse_args(argv)
    if session is None:
        import boto3

        session = boto3.session.Session(region_name=args.region or os.environ.get("AWS_REGION") or None)
        if session.get_credentials() is None or not session.region_name:
            print("no AWS credentials or region: `aws configure` or `aws sso login`, and AWS_REGION", file=sys.stderr)
            return 2
    restore = Restore(session, args.profile, say=lambda line: print(line, flush=True))
    try:
        if args.finish:
            state = json.loads(args.state.read_text()) if args.state and args.state.exists() else {}
            print(restore.finish(state.get("snapshot"), args.previous or state.get("previous")))
            return 0
        db = restore.database()
        if not args.snapshot and not args.time:
            print(restore.listing(db))
            return 0
        when = parse_time(args.time) if args.time else None
        if args.snapshot:
            restore.check_snapshot(db, args.snapshot)
        else:
            restore.check_time(db, when)
        what = f"snapshot {args.snapshot}" if args.snapshot else f"point in time {args.time}"
        print(
            f"This replaces the {db.kind} {db.identifier} of {restore.stack} with one restored from {what}.\n"
            "The current database is snapshotted first; writes made after that snapshot, until the deploy "
            "finishes, are not in the restored database."
        )
        if not args.yes:
            if not sys.stdin.isatty():
                print("refused: pass --yes (make restore ... YES=1) to go ahead", file=sys.stderr)
                return 2
            if input("Type the profile name to go ahead: ").strip() != args.profile:
                print("nothing done", file=sys.stderr)
                return 1
        prepared = restore.prepare(db, snapshot=args.snapshot, when=when)
        record_in_cdk_json(cdk_json, args.profile, prepared)
        if args.state:
            args.state.write_text(json.dumps({"snapshot": prepared, "previous": db.identifier}) + "\n")
        print(
            f"[3/3] cdk.json: {KEY} for {args.profile} = {prepared} (commit it: every later deploy needs it)\n"
            f"      next: make deploy PROFILE={args.profile} (make restore runs it now)"
        )
        return 0
    except RestoreError as exc:
        print(f"restore: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
