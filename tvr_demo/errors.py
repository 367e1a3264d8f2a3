"""User-facing errors: each says what was wrong, with which file, and what to do."""


class TVRError(Exception):
    """Base class: the CLI prints the message on one line and exits 2; the UI shows it as a notice."""


class VideoDecodeError(TVRError):
    """A video file is missing, empty, truncated or not a video."""


class DatasetError(TVRError):
    """A benchmark folder or annotation file is missing or malformed."""


class CheckpointError(TVRError):
    """A checkpoint is missing, of the wrong architecture, partial, or unsafe to load."""


class QueryError(TVRError):
    """A search query is empty or otherwise unusable."""


class DeviceError(TVRError):
    """A --device this machine does not have (e.g. cuda without a CUDA device)."""
