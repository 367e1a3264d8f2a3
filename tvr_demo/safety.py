"""The app's path policy: a path a client sends (a gallery folder, a file) is used only if it lies inside the
folders the server was configured to serve, after `..` and symlinks are resolved. The CLI, run by a local user,
does not go through it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from tvr_demo.errors import TVRError


class UnsafePathError(TVRError):
    """A path from a client points outside the folders this server serves."""


def within(path: Path, roots: Sequence[Path]) -> bool:
    """True when `path`, with symlinks resolved, is one of `roots` or lies under one (roots resolved too)."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


def resolve_within(path: str | Path, roots: Sequence[Path], what: str = "path", hint: str = "") -> Path:
    """The resolved path if it lies inside one of `roots` (a relative path is taken from the first root), else an
    UnsafePathError that names the served folders, not where the path led."""
    text = str(path).strip()
    names = ", ".join(f"{Path(root).name}/" for root in roots) or "none"
    if not text or "\x00" in text:
        raise UnsafePathError(f"the {what} is empty or not a valid path")
    candidate = Path(text) if Path(text).is_absolute() else Path(roots[0]) / text
    try:
        if within(candidate, roots):
            resolved = candidate.resolve()
            resolved.exists()  # raises on what the file system cannot take (a name too long)
            return resolved
    except (OSError, RuntimeError, ValueError) as err:  # a name too long, a symlink loop (RuntimeError)...
        raise UnsafePathError(f"the {what} {text[:200]!r} is not a usable path ({type(err).__name__})") from None
    raise UnsafePathError(f"the {what} {text[:200]!r} is outside the folders this app serves ({names})"
                          + (f"; {hint}" if hint else ""))


# An absolute path of two or more parts, not inside a URL ("https://host/a/b") or a relative path ("data/x/y").
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^/\s'\"`()\[\]<>]+){2,}/?")


def public_name(text: str) -> str:
    """A name (video id, caption, file or folder name, model label) as clients see it: without Unicode's invisible
    format characters (category Cf: bidi controls such as U+202E, zero-width spaces and joiners, soft hyphens), with
    which one name can display as another ("clip\u202e4pm.exe" reads "clipexe.mp4")."""
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def public_message(text: str) -> str:
    """A message as a client may see it: every absolute server path cut to its last part (the file or folder name
    the user knows), so no error shows where the server keeps its data, caches or libraries; names in it as
    `public_name` shows them."""
    return public_name(_ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text))
