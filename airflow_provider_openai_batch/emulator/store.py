"""Files on disk and the batch records, behind one re-entrant lock.

One lock keeps the emulator simple to reason about: every read or state change of a record
happens under it. File bytes are streamed to and from disk in chunks; only metadata is in memory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import BinaryIO

from airflow_provider_openai_batch.emulator.errors import bad_request, batch_not_found, file_not_found
from airflow_provider_openai_batch.emulator.records import BatchRecord, FileRecord

CHUNK_BYTES = 1024 * 1024


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class Store:
    """In-memory index of files and batches whose bytes live under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.lock = threading.RLock()
        self.files_dir = data_dir / "files"
        self.inputs_dir = data_dir / "batch-inputs"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}

    # Files

    def save_upload(
        self, source: BinaryIO, filename: str, purpose: str, max_bytes: int, expires_after: int | None
    ) -> FileRecord:
        """Copy an upload to disk chunk by chunk, refusing it once it passes ``max_bytes``."""
        file_id = new_id("file-")
        path = self.files_dir / file_id
        size = _copy_limited(source, path, max_bytes)
        now = time.time()
        expires_at = now + expires_after if expires_after is not None else None
        return self.add_file(FileRecord(file_id, filename, purpose, size, now, path, expires_at))

    def add_file(self, record: FileRecord) -> FileRecord:
        with self.lock:
            self._files[record.id] = record
        return record

    def new_file_path(self) -> tuple[str, Path]:
        file_id = new_id("file-")
        return file_id, self.files_dir / file_id

    def get_file(self, file_id: str, param: str = "id") -> FileRecord:
        with self.lock:
            record = self._files.get(file_id)
        if record is None:
            raise file_not_found(file_id, param)
        return record

    def list_files(self) -> list[FileRecord]:
        with self.lock:
            return list(self._files.values())

    def delete_file(self, file_id: str) -> None:
        with self.lock:
            record = self._files.pop(file_id, None)
        if record is None:
            raise file_not_found(file_id)
        record.path.unlink(missing_ok=True)

    def pin_input(self, record: FileRecord, batch_id: str) -> Path:
        """Give a batch its own link to its input, so a later DELETE of the file cannot break it."""
        pinned = self.inputs_dir / batch_id
        try:
            os.link(record.path, pinned)
        except FileNotFoundError:
            raise file_not_found(record.id, "input_file_id") from None
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(record.path, pinned)
        return pinned

    # Batches

    def put_batch(self, record: BatchRecord) -> BatchRecord:
        with self.lock:
            self._batches[record.id] = record
        return record

    def get_batch(self, batch_id: str) -> BatchRecord:
        with self.lock:
            record = self._batches.get(batch_id)
        if record is None:
            raise batch_not_found(batch_id)
        return record

    def batch_ids_newest_first(self) -> list[str]:
        with self.lock:
            return list(reversed(self._batches))

    def batches(self) -> list[BatchRecord]:
        with self.lock:
            return list(self._batches.values())

    def clear(self) -> None:
        """Forget every file and batch and delete their bytes."""
        with self.lock:
            self._files.clear()
            self._batches.clear()
            for folder in (self.files_dir, self.inputs_dir):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, exist_ok=True)


def _copy_limited(source: BinaryIO, target: Path, max_bytes: int) -> int:
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                target.unlink(missing_ok=True)
                raise bad_request(
                    f"File is too large: the limit is {max_bytes:,} bytes for this purpose.", param="file"
                )
            out.write(chunk)
    return size
