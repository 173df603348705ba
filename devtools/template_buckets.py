"""The attachments bucket as `template.yaml` declares it, for the local emulator (`make dev`) and tests.

`create_attachments_bucket(s3, name)` creates the bucket of the template's `AWS::S3::Bucket` with the
same block-public-access, default encryption, CORS (any origin locally) and lifecycle rules, through
any S3 client, so local uploads behave like deployed ones (as far as moto enforces them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.template_tables import TEMPLATE_PATH, CloudFormationTag, load_template

DEFAULT_BUCKET_NAME = "chat-local-attachments"
LOCAL_EXPIRATION_DAYS = 30


def bucket_properties(template_path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    """The properties of the template's one S3 bucket."""
    resources = load_template(template_path)["Resources"]
    buckets = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::S3::Bucket"]
    if len(buckets) != 1:
        raise ValueError(f"expected one AWS::S3::Bucket in {template_path}, found {len(buckets)}")
    return dict(buckets[0])


def _resolve(value: Any) -> Any:
    """Template values with their parameters replaced by local ones."""
    if isinstance(value, CloudFormationTag):
        return {"CorsAllowOrigins": ["*"], "AttachmentsExpirationDays": LOCAL_EXPIRATION_DAYS}.get(value.value, value.value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def create_attachments_bucket(s3: Any, name: str = DEFAULT_BUCKET_NAME) -> None:
    """Create (or update) the bucket `name` with the template's settings."""
    props = _resolve(bucket_properties())
    try:
        region = s3.meta.region_name
        if region and region != "us-east-1":
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        else:
            s3.create_bucket(Bucket=name)
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",
                                                                              "BucketAlreadyExists"):
            raise
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules_sse = [{"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
                  "BucketKeyEnabled": bool(r.get("BucketKeyEnabled"))} for r in encryption]
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules_sse})
    cors = [{"AllowedOrigins": r["AllowedOrigins"], "AllowedMethods": r["AllowedMethods"],
             "AllowedHeaders": r["AllowedHeaders"], "MaxAgeSeconds": r["MaxAge"]}
            for r in props["CorsConfiguration"]["CorsRules"]]
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": cors})
    rules = []
    for rule in props["LifecycleConfiguration"]["Rules"]:
        out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
        if "ExpirationInDays" in rule:
            out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "AbortIncompleteMultipartUpload" in rule:
            out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
        rules.append(out)
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
