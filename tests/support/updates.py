"""What CloudFormation would do moving a deployment from one set of templates to another, read
from the templates alone: which exports still in use would disappear, and which resources would
be replaced (a changed create-only property, from the resource schemas cfn-lint ships).

CDK deploys the stacks in dependency order (Network, Data, Service): while a producer updates,
its consumers still run the old templates, so every export the old consumers import must
survive the producer's update.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cfnlint

from tests.support.templates import ROLES, Templates

# What holds data or what clients and other stacks address by name: replacing one loses data,
# changes an endpoint, or (with a fixed name) fails the update.
STATEFUL = {
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBProxy",
    "AWS::RDS::DBProxyEndpoint",
    "AWS::SecretsManager::Secret",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::S3::Bucket",
}
_SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas"


@functools.cache
def create_only(resource_type: str) -> tuple[str, ...]:
    """The top-level properties a change of which replaces a resource of this type."""
    index = json.loads((_SCHEMAS / "providers" / "eu-west-1.json").read_text())
    if resource_type not in index:  # a custom resource: its handler decides, on Update
        return ()
    schema = json.loads((_SCHEMAS / "resources" / f"{index[resource_type]}.json").read_text())
    return tuple(sorted({p.split("/")[2] for p in schema.get("createOnlyProperties", [])}))


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def imports(template: dict[str, Any]) -> set[str]:
    """The export names a template imports (Fn::ImportValue of a literal name)."""
    return {
        node["Fn::ImportValue"]
        for node in _walk(template.get("Resources", {}))
        if isinstance(node, dict) and isinstance(node.get("Fn::ImportValue"), str)
    }


def exports(template: dict[str, Any]) -> set[str]:
    """The export names a template declares."""
    names = set()
    for output in template.get("Outputs", {}).values():
        name = output.get("Export", {}).get("Name")
        if isinstance(name, str):
            names.add(name)
    return names


def lost_exports(before: Templates, after: Templates) -> list[str]:
    """Exports the old consumers still import that a producer's new template drops: CloudFormation
    refuses that producer's update ("Export ... cannot be deleted as it is in use")."""
    problems = []
    for i, producer in enumerate(ROLES):
        kept = exports(after[producer])
        for consumer in ROLES[i + 1 :]:
            for name in sorted(imports(before[consumer]) & exports(before[producer]) - kept):
                problems.append(f"{producer} drops export {name}, which {consumer} still imports")
    return problems


def _canonical(value: Any) -> Any:
    """A cross-stack reference, strong (Fn::ImportValue of "<stack>:ExportsOutput<what><hash>") or
    weak (Fn::GetStackOutput of "PublishOutput<what><hash>"), as the value it resolves to: the same
    producer's same attribute. A reference changing form changes no resolved property."""
    if isinstance(value, dict):
        imported = value.get("Fn::ImportValue")
        if isinstance(imported, str) and ":ExportsOutput" in imported:
            stack, name = imported.split(":ExportsOutput", 1)
            return {"CrossStack": f"{stack}:{name[:-8]}"}
        output = value.get("Fn::GetStackOutput")
        if isinstance(output, dict) and str(output.get("OutputName", "")).startswith("PublishOutput"):
            return {"CrossStack": f"{output['StackName']}:{output['OutputName'].removeprefix('PublishOutput')[:-8]}"}
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    return json.dumps(_canonical(a), sort_keys=True) == json.dumps(_canonical(b), sort_keys=True)


def _named(resource: dict[str, Any], properties: tuple[str, ...]) -> list[str]:
    """Create-only name properties the template fixes to a literal (a replacement would collide
    with itself); a name that refers to another resource (a flow log's log group) is not one."""
    given = resource.get("Properties", {})
    return [p for p in properties if p.endswith("Name") and isinstance(given.get(p), str)]


def replacements(before: Templates, after: Templates) -> list[str]:
    """Resources the update would replace that must not be: a stateful one, or one whose name is
    fixed in the template (CloudFormation cannot create the new one beside the old)."""
    problems = []
    for role in ROLES:
        old, new = before[role].get("Resources", {}), after[role].get("Resources", {})
        for logical_id, resource in new.items():
            previous = old.get(logical_id)
            if previous is None or previous["Type"] != resource["Type"]:
                continue
            kind = resource["Type"]
            properties = create_only(kind)
            changed = [
                p
                for p in properties
                if not _same(previous.get("Properties", {}).get(p), resource.get("Properties", {}).get(p))
            ]
            if not changed:
                continue
            named = _named(resource, properties)
            if kind in STATEFUL or named:
                why = "stateful" if kind in STATEFUL else f"fixed {', '.join(named)}"
                problems.append(f"{role}: {logical_id} ({kind}, {why}) is replaced: {', '.join(changed)} changes")
        # A stateful resource under a new logical id is a replacement too (delete the old, create anew).
        for kind in STATEFUL:
            gone = [lid for lid, r in old.items() if r["Type"] == kind and lid not in new]
            came = [lid for lid, r in new.items() if r["Type"] == kind and lid not in old]
            if gone and came:
                problems.append(f"{role}: {kind} {', '.join(gone)} is replaced by {', '.join(came)}")
    return problems


def update_problems(before: Templates, after: Templates) -> list[str]:
    """Everything that makes moving from ``before`` to ``after`` fail or lose something."""
    return lost_exports(before, after) + replacements(before, after)
