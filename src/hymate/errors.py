"""Errors a user can act on. The CLI prints these as one clear message, never a traceback."""


class HymateError(Exception):
    """Base class for every error hymate raises on purpose."""


class DataError(HymateError):
    """Input data are missing, malformed or inconsistent."""


class DataNotFoundError(DataError):
    """The data location holds no recognisable dataset."""


class CheckpointError(HymateError):
    """A checkpoint folder (or a resume checkpoint) is incomplete, malformed or of another version."""
