"""The user-facing error types and the one line a command prints for them.

A leaf module (standard library only): every package may raise these, and the entry points turn
them into one ``error: ...`` line on stderr with the type's exit status (2 for bad input, 1 for a
fault of the environment such as a full disk), never a traceback (``--debug`` shows one).
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """A fault the user can fix. The message is one line naming the file or flag and the fix."""

    exit_code = 2


class DatasetError(UserError, ValueError):
    """Bad or missing input data: dataset folders, index files, images, masks, reference lists."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unsafe, unreadable, or does not fit the model."""


class ModelLoadError(UserError, RuntimeError):
    """The backbone could not be built or its weights could not be loaded."""


class ConfigError(UserError, ValueError):
    """A command-line value or combination of values that cannot work (names the flag)."""


class NonFiniteError(UserError, ArithmeticError):
    """A NaN or infinite loss, gradient, weight or map (names where it appeared)."""


class RunLockedError(UserError):
    """Another run is writing into the same output folder."""


class Interrupted(UserError):
    """Ctrl-C, with what to do next (e.g. which checkpoint to resume from)."""

    exit_code = 130


class EnvironmentFault(UserError, OSError):
    """The machine, not the input: a full or read-only disk, no permission, a missing device."""

    exit_code = 1


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
}


def os_fault(exc: OSError, path: object = None) -> UserError:
    """An ``OSError`` met while reading or writing ``path`` as a user-facing error.

    Disk-full, read-only and permission errors are faults of the environment (exit status 1);
    anything else about a named path is reported as bad input (exit status 2).
    """
    where = path if path is not None else (exc.filename or "")
    hint = _OS_HINTS.get(exc.errno)
    if hint:
        return EnvironmentFault(f"cannot write {where}: {hint}")
    return DatasetError(f"{where}: {exc.strerror or exc}")


def one_line(exc: BaseException) -> str:
    """The user-facing line of an exception.

    A torch DataLoader worker re-raises errors with the whole worker traceback in the message;
    its last line is the original ``Type: message``, from which the message is returned.
    """
    text = str(exc).strip()
    if "Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


USER_ERROR_NAMES = ("DatasetError", "CheckpointError", "ModelLoadError", "ConfigError",
                    "NonFiniteError", "RunLockedError", "EnvironmentFault", "FeatureCacheError",
                    "Interrupted")


def wrapped_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a DataLoader worker's re-raise of one of our errors (by type name)."""
    text = str(exc)
    return "Traceback" in text and any(f"{n}:" in text for n in USER_ERROR_NAMES)
