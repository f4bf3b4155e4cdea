"""Export and report files get one mode, 0644, whatever the process's umask (issue 14):
Parquet and CSV (moved into place) and HTML reports (written from bytes) alike."""

from __future__ import annotations

import os
import stat

import pytest

from resources.storage import EXPORT_FILE_MODE, ExportStorage


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_every_export_file_is_0644(tmp_path, umask):
    storage = ExportStorage(export_url=str(tmp_path / "exports"))
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(b"PAR1")
    previous = os.umask(umask)
    try:
        paths = [
            storage.write_file("activities/tenant=a/date=2026-03-01/activities.parquet", staged),
            storage.write_file("activities/tenant=a/date=2026-03-01/activities.csv", staged),
            storage.write_bytes("insight_reports/ws/2026-03-01.html", b"<html></html>"),
        ]
    finally:
        os.umask(previous)
    assert EXPORT_FILE_MODE == 0o644
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in paths] == [0o644] * 3
