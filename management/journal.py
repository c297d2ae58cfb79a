"""A journal of media files being written, so a process killed halfway leaves no orphan behind.

Before a file is written under media its name goes into this process's journal; once the rows
that refer to the files are committed (or the files were deleted after a failure) the journal is
removed. A journal left by a process that no longer runs lists files that may have no row: at the
next start `media_journals_recover` deletes those, and keeps every file some row refers to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage

from datasets.models import DataSet, DataSetItem
from management.files import media_create
from management.processes import pid_alive
from training.models import TrainingRun

logger = logging.getLogger(__name__)

FOLDER = "journal"


class MediaJournal:
    """The names one operation writes under media, kept in a small text file while it runs."""

    def __init__(self) -> None:
        folder = Path(settings.MEDIA_ROOT) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.txt"
        self._file = self.path.open("a", encoding="utf-8")

    def add(self, name: str) -> None:
        # A killed process loses nothing it wrote to the page cache: flushing is enough.
        self._file.write(name + "\n")
        self._file.flush()

    def save(self, field, filename: str, content: File) -> None:
        """`field.save(filename, content, save=False)`, with the file's name journalled first."""
        storage = field.storage
        name = storage.get_available_name(field.field.generate_filename(field.instance, filename))
        self.add(name)
        saved = storage.save(name, content)
        if saved != name:
            self.add(saved)
        field.name = saved
        setattr(field.instance, field.field.attname, saved)
        field._committed = True

    def create(self, storage, name: str, data: bytes) -> str:
        """Keep `data` as the new file `name`, a name just made unique (`media_create`), journalled
        first; the name kept."""
        self.add(name)
        saved = media_create(storage=storage, name=name, data=data)
        if saved != name:
            self.add(saved)
        return saved

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def media_journal() -> Iterator[MediaJournal]:
    """A journal for the files written inside the block; it is removed when the block ends, however
    it ends (callers delete their files on an exception; only a killed process leaves a journal)."""
    journal = MediaJournal()
    try:
        yield journal
    finally:
        journal.close()


def _referenced(name: str) -> bool:
    return (
        DataSetItem.objects.filter(image=name).exists()
        or TrainingRun.objects.filter(model_file=name).exists()
        or TrainingRun.objects.filter(log_file=name).exists()
        or TrainingRun.objects.filter(weights_file=name).exists()
        or DataSet.objects.filter(weights_file=name).exists()
    )


def _outside_media(name: str) -> bool:
    """A name that would reach outside media (absolute, or climbing with ..): never deleted."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name


def media_journals_recover() -> list[str]:
    """Delete the unreferenced files listed by journals of dead processes of this host; return them."""
    folder = Path(settings.MEDIA_ROOT) / FOLDER
    host = socket.gethostname()
    deleted: list[str] = []
    for journal in sorted(folder.glob(f"{host}-*.txt")) if folder.is_dir() else []:
        pid = journal.name[len(host) + 1 :].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        names = {line.strip() for line in journal.read_text(encoding="utf-8").splitlines() if line.strip()}
        for name in sorted(names):
            # The files themselves are in media storage (this disk or a bucket); the journal, a
            # process's own state, stays on this machine.
            if _outside_media(name) or _referenced(name):
                continue
            if default_storage.exists(name):
                default_storage.delete(name)
                deleted.append(name)
        journal.unlink(missing_ok=True)
    if deleted:
        logger.warning("deleted %d file(s) left by an interrupted upload", len(deleted))
    return deleted
