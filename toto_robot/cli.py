"""How entry points report errors a user can act on: one line on stderr, exit code 2.

A wrong path, a damaged episode store, a spec that does not match, a GL backend that cannot
work: the message says what to do, and a 50-line traceback would only hide it. Bugs keep their
traceback. `HYDRA_FULL_ERROR=1` or `--debug` on the command line shows the traceback of user
errors too. Use it under `@hydra.main` (so hydra's own error printing never sees the error)::

    @hydra.main(config_path="conf", config_name="x", version_base="1.3")
    @user_errors
    def main(cfg): ...
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

DEBUG_FLAG = "--debug"
EXIT_CODE = 2


class UserError(Exception):
    """An error the user can act on (bad input, damaged data, wrong setup); its message says how."""


# Path problems carry the path in their message ("[Errno 13] Permission denied: 'out/x'").
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, PermissionError, IsADirectoryError,
                                                NotADirectoryError, FileExistsError)


def debug_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or DEBUG_FLAG in sys.argv


def user_errors(fn: F) -> F:
    """Wrap an entry point: errors in USER_ERRORS become `error: <message>` and exit code 2."""
    if DEBUG_FLAG in sys.argv:  # hydra would take it for an override: consume it here
        sys.argv.remove(DEBUG_FLAG)
        os.environ["HYDRA_FULL_ERROR"] = "1"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if debug_requested():
                raise
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


def one_line(e: BaseException) -> str:
    """The exception's message on one line (an OSError without one: its strerror and path)."""
    text = str(e) or type(e).__name__
    return " ".join(text.split())
