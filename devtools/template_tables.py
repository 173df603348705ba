"""DynamoDB tables exactly as `template.yaml` declares them, for moto and local development.

`table_definitions()` reads every `AWS::DynamoDB::Table` from the CloudFormation template and turns it
into `create_table` arguments; `create_tables()` creates them (and their TTL) through any DynamoDB
client. Tests and the dev server use it so the local schema can never drift from the deployed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

# Properties create_table accepts as they are written in CloudFormation.
_CREATE_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes",
                      "LocalSecondaryIndexes", "ProvisionedThroughput", "StreamSpecification")


class CloudFormationTag:
    """A short-form intrinsic (`!Ref X`, `!Sub ...`, `!GetAtt A.B`) kept as data: tag name plus value."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"!{self.tag} {self.value!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CloudFormationTag) and (self.tag, self.value) == (other.tag, other.value)

    def __hash__(self) -> int:
        return hash((self.tag, repr(self.value)))


class CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that accepts every CloudFormation short-form tag instead of failing on it."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> CloudFormationTag:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return CloudFormationTag(suffix, value)


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_template(template_path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template, keeping intrinsic tags as `CloudFormationTag`."""
    with open(template_path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=CloudFormationLoader)  # a SafeLoader subclass: no arbitrary objects
    if not isinstance(document, dict):
        raise ValueError(f"{template_path} is not a CloudFormation template")
    return document


def table_definitions(template_path: Path | str = TEMPLATE_PATH) -> list[dict[str, Any]]:
    """One `create_table`-style dict per `AWS::DynamoDB::Table` in the template.

    Each dict has `LogicalId`, the create_table properties (`TableName` only if the template fixes a
    literal one) and `TimeToLiveSpecification` when the template enables TTL.
    """
    resources = load_template(template_path).get("Resources", {})
    definitions = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        properties = resource.get("Properties", {})
        definition: dict[str, Any] = {"LogicalId": logical_id}
        for key in _CREATE_TABLE_KEYS:
            if key in properties:
                definition[key] = properties[key]
        if isinstance(properties.get("TableName"), str):
            definition["TableName"] = properties["TableName"]
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") is True:
            definition["TimeToLiveSpecification"] = {"AttributeName": ttl["AttributeName"], "Enabled": True}
        definitions.append(definition)
    return definitions


def create_tables(dynamodb_client: Any, table_name: str | None = None,
                  template_path: Path | str = TEMPLATE_PATH) -> list[str]:
    """Create every table of the template through `dynamodb_client` and return their names.

    `table_name` names the table when the template declares exactly one (the usual case:
    `Settings.table_name`); otherwise each table is named after its template `TableName` or logical id.
    An existing table of the same name keeps its schema and items; only a time to live it lacks is
    turned on (a state file from before TTL was in the template still gets its expired items deleted).
    """
    definitions = table_definitions(template_path)
    if table_name is not None and len(definitions) != 1:
        raise ValueError(f"table_name given but the template declares {len(definitions)} tables")
    created = []
    for definition in definitions:
        name = table_name or definition.get("TableName") or definition["LogicalId"]
        arguments = {key: value for key, value in definition.items()
                     if key not in ("LogicalId", "TableName", "TimeToLiveSpecification")}
        try:
            dynamodb_client.create_table(TableName=name, **arguments)
            dynamodb_client.get_waiter("table_exists").wait(TableName=name,
                                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        except dynamodb_client.exceptions.ResourceInUseException:
            pass
        if "TimeToLiveSpecification" in definition:
            _enable_time_to_live(dynamodb_client, name, definition["TimeToLiveSpecification"])
        created.append(name)
    return created


def _enable_time_to_live(dynamodb_client: Any, table_name: str, specification: dict[str, Any]) -> None:
    # DynamoDB refuses to enable a TTL that is already on (ValidationException): look first.
    current = dynamodb_client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    dynamodb_client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=specification)
