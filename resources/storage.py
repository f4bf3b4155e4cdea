"""Where export files and reports go: a local directory or `s3://bucket/prefix`.

Writes are atomic: a reader sees the whole file or none. Locally that is write-then-rename in
the target directory; on S3 an object becomes visible only once its upload completes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg


class ExportStorage(dg.ConfigurableResource):
    """`export_url` is a directory path or `s3://bucket/prefix`."""

    export_url: str = ".supportflow/exports"
    aws_endpoint_url: str = ""

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
            os.fsync(dst.fileno())
        os.replace(staged, target)
        return str(target)

    def read_bytes(self, relative_path: str) -> bytes:
        if self.is_s3:
            bucket, key = self._bucket_key(relative_path)
            return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(self.uri(relative_path)).read_bytes()

    def _bucket_key(self, relative_path: str) -> tuple[str, str]:
        rest = self.export_url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        key = "/".join(p for p in (prefix.strip("/"), relative_path.lstrip("/")) if p)
        return bucket, key

    def _s3(self):
        from dagster_aws.s3 import S3Resource

        return S3Resource(endpoint_url=self.aws_endpoint_url or None).get_client()
