"""Where export files and reports go: a local directory or `s3://bucket/prefix`.

Writes are atomic: a reader sees the whole file or none. Locally that is write-then-rename in
the target directory; on S3 an object becomes visible only once its upload completes.

Every local export and report file (Parquet, CSV, HTML) gets mode 0644, set explicitly whatever
the process's umask: the files are meant to be read by the people and tools given the export
directory (BI tools, a file share, a web server for the reports), so who may read them is
decided once, by the permissions of `SUPPORTFLOW_EXPORT_URL`'s directory (e.g. 0750 and a
group), not file by file. They hold support data (activity details, feedback texts): put the
directory where only those readers can reach it.

On S3 the objects go through dagster-aws's `S3Resource` (the nested `s3` resource), so the
bucket's endpoint, region, profile and retries are configured the way Dagster configures S3,
and the Dagster UI shows that configuration; the credentials come from the standard AWS chain
(environment, profile, instance or pod role). The writer needs `s3:PutObject`, `s3:GetObject`,
`s3:DeleteObject` and `s3:ListBucket` on the export bucket and prefix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

EXPORT_FILE_MODE = 0o644


class ExportStorage(dg.ConfigurableResource):
    """`export_url` is a directory path or `s3://bucket/prefix`; `s3` is the S3 resource used
    for an `s3://` URL (default: dagster-aws's `S3Resource()`, i.e. the standard AWS chain)."""

    export_url: str = ".supportflow/exports"
    s3: S3Resource | None = None
    # one S3 client per resource instance: building a boto3 client costs tens of milliseconds
    # and an export writes two objects per tenant (boto3 clients are thread-safe)
    _s3_client: Any = PrivateAttr(default=None)

    @property
    def is_s3(self) -> bool:
        return self.export_url.startswith("s3://")

    def uri(self, relative_path: str) -> str:
        """Where `relative_path` is (or will be) stored."""
        if self.is_s3:
            return self.export_url.rstrip("/") + "/" + relative_path.lstrip("/")
        return str(Path(self.export_url).expanduser().resolve() / relative_path)

    def write_bytes(self, relative_path: str, data: bytes, content_type: str = "") -> str:
        if self.is_s3:
            bucket, key = self._bucket_key(relative_path)
            extra = {"ContentType": content_type} if content_type else {}
            self._s3().put_object(Bucket=bucket, Key=key, Body=data, **extra)
            return self.uri(relative_path)
        target = Path(self.uri(relative_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), EXPORT_FILE_MODE)  # mkstemp made it 0600
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def write_file(self, relative_path: str, local_path: Path, content_type: str = "") -> str:
        """Move or upload an already written local file into place atomically."""
        if self.is_s3:
            bucket, key = self._bucket_key(relative_path)
            extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
            self._s3().upload_file(str(local_path), bucket, key, **extra)
            return self.uri(relative_path)
        target = Path(self.uri(relative_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / f".{target.name}.staged"
        # copy next to the target first so the final rename never crosses file systems
        with open(local_path, "rb") as src, open(staged, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fchmod(dst.fileno(), EXPORT_FILE_MODE)  # not whatever the umask gives
            os.fsync(dst.fileno())
        os.replace(staged, target)
        return str(target)

    def read_bytes(self, relative_path: str) -> bytes:
        if self.is_s3:
            bucket, key = self._bucket_key(relative_path)
            return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(self.uri(relative_path)).read_bytes()

    def list_files(self, relative_prefix: str) -> list[str]:
        """The stored files under a folder (relative paths, sorted), wherever they are."""
        folder = relative_prefix.strip("/")
        if self.is_s3:
            bucket, key = self._bucket_key(folder + "/")
            base = key[: len(key) - len(folder) - 1]
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            return sorted(
                item["Key"][len(base) :] for page in pages for item in page.get("Contents", [])
            )
        root = Path(self.uri(""))
        return sorted(
            str(path.relative_to(root))
            for path in (root / folder).rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def delete(self, relative_path: str) -> bool:
        """Remove one stored file (and its directory, locally, once empty); True if it existed."""
        if self.is_s3:
            bucket, key = self._bucket_key(relative_path)
            client = self._s3()
            try:
                client.head_object(Bucket=bucket, Key=key)
            except client.exceptions.ClientError:
                return False
            client.delete_object(Bucket=bucket, Key=key)
            return True
        target = Path(self.uri(relative_path))
        existed = target.exists()
        target.unlink(missing_ok=True)
        try:
            target.parent.rmdir()
        except OSError:  # not empty, or already gone
            pass
        return existed

    def _bucket_key(self, relative_path: str) -> tuple[str, str]:
        rest = self.export_url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        key = "/".join(p for p in (prefix.strip("/"), relative_path.lstrip("/")) if p)
        return bucket, key

    def _s3(self) -> Any:
        if self._s3_client is None:
            self._s3_client = (self.s3 or S3Resource()).get_client()
        return self._s3_client
