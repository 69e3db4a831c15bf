"""IAM policies of the S3 weights: read one prefix of one bucket; write it (prefetch)."""

from __future__ import annotations

from typing import Any


def s3_read_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """IAM policy that lists and reads one prefix of one bucket, nothing else.

    Mountpoint lists with ``prefix/`` and reads objects below it; ``s3:prefix``
    conditions keep ListBucket from enumerating the rest of the bucket.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListModelPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}},
            },
            {
                "Sid": "ReadModelObjects",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
            },
        ],
    }


def s3_write_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """IAM policy for the prefetch Job: the read policy plus writes under the prefix."""
    policy = s3_read_policy(bucket, prefix)
    policy["Statement"].append(
        {
            "Sid": "WriteModelObjects",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
        }
    )
    return policy
