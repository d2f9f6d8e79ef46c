"""Exception types. Every error a user can cause derives from :class:`NeurodeployError`;
the CLI prints its message (no traceback) and exits with status 2."""


class NeurodeployError(Exception):
    """Base class of every user-facing error in neurodeploy."""


class IRValidationError(NeurodeployError):
    """The network IR is inconsistent (the message names the population or projection)."""


class IRFormatError(NeurodeployError):
    """An IR file is missing, corrupt, truncated or of an unknown version."""


class UnsupportedOperationError(NeurodeployError):
    """The converter met a PyTorch operation it cannot turn into spiking neurons."""


class DataError(NeurodeployError):
    """A dataset folder or file is missing or malformed, or inputs have the wrong shape."""


class ResultFormatError(NeurodeployError):
    """A saved SimulationResult is missing, corrupt or of an unknown version."""


class BackendError(NeurodeployError):
    """A backend is unknown, not installed, or cannot run the requested network."""


class ConfigError(NeurodeployError, ValueError):
    """A setting is out of range, of the wrong kind, or names something that does not exist (the
    message names the setting); raised before any training, conversion or simulation starts."""


class ModelFormatError(NeurodeployError):
    """A model file is missing, corrupt or not a model this project can read."""


def did_you_mean(word: str, candidates) -> str:
    """"; did you mean X?" with the candidate closest to ``word`` (difflib's similarity ratio at least 0.6),
    or "" when none is close: appended to the message about a mistyped flag or choice."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class WriteError(NeurodeployError):
    """An output file or folder cannot be written (full disk, file-size limit, read-only or missing
    folder, a file where a folder is needed, a run folder in use or removed); files written before are
    left as they were."""
