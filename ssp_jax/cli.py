"""The one error path of every command-line entry point: a user error (bad config, missing
file, unreachable judge) prints one `error: ...` line on stderr and exits with EXIT_USER_ERROR;
nothing else is caught."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix from the message alone (raised with that message)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError)


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Calls `main(argv)` and exits with its code; user errors become one line and exit 2."""
    try:
        code = main(sys.argv[1:] if argv is None else list(argv))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
