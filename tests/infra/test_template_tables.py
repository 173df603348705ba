"""devtools.template_tables builds, from template.yaml, a table that works like the deployed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.template_tables import CloudFormationTag, create_tables, load_template, table_definitions


def test_loader_keeps_intrinsic_tags_as_data(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  A:\n    Properties:\n      X: !Ref Foo\n      Y: !GetAtt B.Arn\n"
                    "      Z: !Sub\n        - ${V}\n        - V: !Ref Bar\n      W: !If [C, 1, !Ref AWS::NoValue]\n")
    properties = load_template(path)["Resources"]["A"]["Properties"]
    assert properties["X"] == CloudFormationTag("Ref", "Foo")
    assert properties["Y"] == CloudFormationTag("GetAtt", "B.Arn")
    assert properties["Z"] == CloudFormationTag("Sub", ["${V}", {"V": CloudFormationTag("Ref", "Bar")}])
    assert properties["W"] == CloudFormationTag("If", ["C", 1, CloudFormationTag("Ref", "AWS::NoValue")])


def test_table_definitions_come_from_the_template() -> None:
    (definition,) = table_definitions()
    assert definition["LogicalId"] == "ChatTable"
    assert "TableName" not in definition  # CloudFormation names it; locally Settings.table_name does
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    assert definition["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert definition["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    # Only create_table arguments: deployment-only properties stay out.
    assert not {"PointInTimeRecoverySpecification", "SSESpecification"} & set(definition)


def test_create_tables_builds_a_working_table_in_moto(dynamodb_client: Any) -> None:
    assert create_tables(dynamodb_client, table_name="chat-test") == ["chat-test"]
    description = dynamodb_client.describe_table(TableName="chat-test")["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in description["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb_client.describe_time_to_live(TableName="chat-test")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    # The base table and the gsi1 index both answer queries the way the stores use them.
    for sk in ("MSG#0001", "MSG#0002"):
        dynamodb_client.put_item(TableName="chat-test", Item={
            "pk": {"S": "CONV#c1"}, "sk": {"S": sk}, "gsi1pk": {"S": "USER#u1"}, "gsi1sk": {"S": f"CONV#{sk}"},
            "expires_at": {"N": "4102444800"}})
    messages = dynamodb_client.query(TableName="chat-test", KeyConditionExpression="pk = :p AND begins_with(sk, :m)",
                                     ExpressionAttributeValues={":p": {"S": "CONV#c1"}, ":m": {"S": "MSG#"}})
    assert [item["sk"]["S"] for item in messages["Items"]] == ["MSG#0001", "MSG#0002"]
    by_user = dynamodb_client.query(TableName="chat-test", IndexName="gsi1", KeyConditionExpression="gsi1pk = :u",
                                    ExpressionAttributeValues={":u": {"S": "USER#u1"}}, ScanIndexForward=False)
    assert [item["gsi1sk"]["S"] for item in by_user["Items"]] == ["CONV#MSG#0002", "CONV#MSG#0001"]


def test_create_tables_leaves_an_existing_table_alone(dynamodb_client: Any) -> None:
    create_tables(dynamodb_client, table_name="chat-test")
    dynamodb_client.put_item(TableName="chat-test", Item={"pk": {"S": "RL#u"}, "sk": {"S": "w"}})
    assert create_tables(dynamodb_client, table_name="chat-test") == ["chat-test"]
    assert dynamodb_client.get_item(TableName="chat-test", Key={"pk": {"S": "RL#u"}, "sk": {"S": "w"}})["Item"]


def test_create_tables_names_tables_after_their_logical_id_without_a_name(dynamodb_client: Any) -> None:
    assert create_tables(dynamodb_client) == ["ChatTable"]
    assert dynamodb_client.describe_table(TableName="ChatTable")["Table"]["TableStatus"] == "ACTIVE"


def test_table_name_is_refused_when_the_template_has_several_tables(tmp_path: Path, dynamodb_client: Any) -> None:
    table = ("    Type: AWS::DynamoDB::Table\n    Properties:\n      BillingMode: PAY_PER_REQUEST\n"
             "      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]\n"
             "      KeySchema: [{AttributeName: pk, KeyType: HASH}]\n")
    path = tmp_path / "two.yaml"
    path.write_text(f"Resources:\n  One:\n{table}  Two:\n{table}")
    with pytest.raises(ValueError, match="2 tables"):
        create_tables(dynamodb_client, table_name="x", template_path=path)
    assert sorted(create_tables(dynamodb_client, template_path=path)) == ["One", "Two"]


def test_create_tables_turns_on_the_time_to_live_an_existing_table_lacks(dynamodb_client: Any) -> None:
    arguments = {key: value for key, value in table_definitions()[0].items()
                 if key not in ("LogicalId", "TimeToLiveSpecification")}
    dynamodb_client.create_table(TableName="chat-test", **arguments)  # as an old state file would hold it
    assert create_tables(dynamodb_client, table_name="chat-test") == ["chat-test"]
    ttl = dynamodb_client.describe_time_to_live(TableName="chat-test")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
