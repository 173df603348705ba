"""The attachments bucket in template.yaml: private, encrypted, TLS only, expiring; the chat function's
S3 access limited to `u/*` and to the calls the code makes."""

from __future__ import annotations

import ast
from typing import Any

from devtools.template_tables import CloudFormationTag, load_template

from .conftest import REPO_ROOT
from .test_template import walk

STORE = REPO_ROOT / "layers" / "common" / "chatcore" / "attachments" / "store.py"
S3_CALLS = {"get_object": "s3:GetObject", "put_object": "s3:PutObject", "delete_objects": "s3:DeleteObject",
            "generate_presigned_post": "s3:PutObject", "generate_presigned_url": "s3:GetObject"}


def resources() -> dict[str, Any]:
    return load_template()["Resources"]


def test_bucket_is_private_encrypted_and_expires_attachments() -> None:
    bucket = resources()["AttachmentsBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    [sse] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireAttachments"]["ExpirationInDays"] == CloudFormationTag("Ref", "AttachmentsExpirationDays")
    assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert load_template()["Parameters"]["AttachmentsExpirationDays"]["Default"] == 30
    [cors] = bucket["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedOrigins"] == CloudFormationTag("Ref", "CorsAllowOrigins")
    assert "POST" in cors["AllowedMethods"]


def test_bucket_policy_denies_plain_http() -> None:
    policy = resources()["AttachmentsBucketPolicy"]["Properties"]["PolicyDocument"]
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def s3_statements(function: str) -> list[dict[str, Any]]:
    policies = resources()[function]["Properties"].get("Policies", [])
    found = []
    for node in walk(policies):
        if isinstance(node, dict) and "Action" in node:
            actions = node["Action"] if isinstance(node["Action"], list) else [node["Action"]]
            if any(isinstance(a, str) and a.startswith("s3:") for a in actions):
                found.append(node)
    return found


def test_only_the_chat_function_reaches_the_bucket_and_only_under_u() -> None:
    [statement] = s3_statements("ChatFunction")
    assert statement["Resource"] == CloudFormationTag("Sub", "${AttachmentsBucket.Arn}/u/*")
    assert s3_statements("HealthFunction") == [] and s3_statements("SummarizeFunction") == []


def test_s3_actions_are_exactly_what_the_file_store_calls() -> None:
    tree = ast.parse(STORE.read_text(encoding="utf-8"))
    calls = {S3_CALLS[n.func.attr] for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in S3_CALLS}
    [statement] = s3_statements("ChatFunction")
    assert set(statement["Action"]) == calls


def test_the_chat_function_is_told_the_bucket() -> None:
    env = resources()["ChatFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ATTACHMENTS_BUCKET"] == CloudFormationTag("Ref", "AttachmentsBucket")
