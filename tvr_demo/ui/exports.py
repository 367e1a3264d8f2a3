"""HTML exports of figures, written to a folder the app owns and prunes: one file per export, kept long enough to be
downloaded (gradio serves a copy of it from its own cache, which `app.build_demo` has gradio clean). A server that
is killed cannot remove its folder; the next one to start does."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

from tvr_demo.errors import QueryError

try:
    import fcntl
except ImportError:  # not POSIX: folders are removed at exit only
    fcntl = None

EXPORT_MAX_BYTES = 20 * 2**20  # a client-sent figure's JSON; the map of the bundled test split is about 2 MB
EXPORT_KEEP_S = 120  # gradio copies the file when the listener returns; older exports are deleted on the next one
FOLDER_PREFIX = "tvr-demo-exports-"
OWNER_LOCK = ".owner.lock"  # a live server holds an exclusive lock on this file in its folder; the kernel drops it
UNOWNED_KEEP_S = 24 * 3600  # a folder without the lock file (made before servers locked theirs) is left this long
_FOLDER: Path | None = None
_OWNER: IO | None = None  # the open lock file, held for the process's lifetime


def export_folder() -> Path:
    """This process's export folder, created on first use (locked as this server's) and removed when it exits."""
    global _FOLDER, _OWNER
    if _FOLDER is None:
        folder = Path(tempfile.mkdtemp(prefix="." + FOLDER_PREFIX))  # locked before it takes a name others look for
        if fcntl is not None:
            _OWNER = open(folder / OWNER_LOCK, "w")
            fcntl.flock(_OWNER, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder = folder.rename(folder.with_name(folder.name[1:]))
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER = folder
    return _FOLDER


def _abandoned(folder: Path) -> bool:
    """Whether no live server owns this export folder: its lock can be taken (the owner died with it), or it has
    no lock file and was not touched for UNOWNED_KEEP_S."""
    lock = folder / OWNER_LOCK
    if not lock.is_file():
        return time.time() - folder.stat().st_mtime > UNOWNED_KEEP_S
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def remove_abandoned_folders() -> int:
    """Remove the export folders of servers that were killed (their exit handler never ran); called at start.
    Returns how many were removed; folders of other users and of live servers are left alone."""
    if fcntl is None:
        return 0
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and folder != _FOLDER and _abandoned(folder):
                shutil.rmtree(folder)
                removed += 1
        except OSError:  # another user's folder, or removed meanwhile
            pass
    return removed


def prune(folder: Path, keep_s: float = EXPORT_KEEP_S) -> None:
    """Delete exports older than keep_s seconds."""
    cutoff = time.time() - keep_s
    for path in folder.glob("*.html"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def write_html(figure_json: str, name: str) -> str:
    """A plotly figure's JSON as a self-contained interactive HTML file; nothing is left behind on failure."""
    import plotly.io as pio

    if not isinstance(figure_json, str) or len(figure_json) > EXPORT_MAX_BYTES:
        size = len(figure_json) / 2**20 if isinstance(figure_json, str) else 0
        raise QueryError(f"the figure is {size:.0f} MB; exports are limited to {EXPORT_MAX_BYTES // 2**20} MB")
    try:
        figure = pio.from_json(figure_json)
    except (ValueError, TypeError):
        raise QueryError("the figure to export is not a valid plotly figure: redraw it, then export it") from None
    folder = export_folder()
    prune(folder)
    safe = "".join(c if c.isalnum() else "_" for c in name)[:40] or "figure"
    fd, path = tempfile.mkstemp(suffix=f"-{safe}.html", dir=folder)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            figure.write_html(f, include_plotlyjs=True, full_html=True)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return path
