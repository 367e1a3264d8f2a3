"""HTML exports of figures, written to a folder the app owns and prunes: one file per export, kept long enough to be
downloaded (gradio serves a copy of it from its own cache, which `app.build_demo` has gradio clean)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

from tvr_demo.errors import QueryError

EXPORT_MAX_BYTES = 20 * 2**20  # a client-sent figure's JSON; the map of the bundled test split is about 2 MB
EXPORT_KEEP_S = 120  # gradio copies the file when the listener returns; older exports are deleted on the next one
_FOLDER: Path | None = None


def export_folder() -> Path:
    """This process's export folder, created on first use and removed when the server exits."""
    global _FOLDER
    if _FOLDER is None:
        _FOLDER = Path(tempfile.mkdtemp(prefix="tvr-demo-exports-"))
        atexit.register(shutil.rmtree, _FOLDER, True)
    return _FOLDER


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
