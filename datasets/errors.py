"""One exception type for bad input data, and how command-line tools report it."""
from __future__ import annotations


class DatasetError(ValueError):
    """Bad or missing input data. The message is one line naming the path and the fix."""


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
