"""Errors that reach the user. Each names what was wrong, where, and what to do."""


class EIMError(Exception):
    """Base class: the CLI prints these as one clean message (no traceback) and exits 2."""


class ConfigError(EIMError):
    """A recipe or override is invalid (unknown key, wrong type, impossible combination)."""


class CheckpointError(EIMError):
    """A checkpoint is missing, truncated, or does not match the model it is loaded into."""


class WriteError(EIMError, OSError):
    """A file could not be written (a full disk, a read-only one); the file it was to replace is
    as it was."""


class DataError(EIMError):
    """A dataset record is bad. Carries the file, the record id and the remedy.

    >>> str(DataError("missing image", file="d.json", record="42", remedy="fix the path"))
    'd.json: record 42: missing image. fix the path'
    """

    def __init__(self, problem, *, file=None, record=None, remedy=None):
        self.problem, self.file, self.record, self.remedy = problem, file, record, remedy
        parts = []
        if file is not None:
            parts.append(str(file))
        if record is not None:
            parts.append(f"record {record}")
        msg = ": ".join(parts + [problem]) if parts else problem
        if remedy:
            msg = f"{msg}. {remedy}"
        super().__init__(msg)
