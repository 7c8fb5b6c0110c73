"""The one error path and console set-up of every command-line entry point: a user error (bad
config, missing file, unreachable judge) prints one `error: ...` line on stderr and exits with
EXIT_USER_ERROR; nothing else is caught. Log records go through tqdm, so that a progress bar
is redrawn below them instead of sharing their line."""

from __future__ import annotations

import logging
import sys
from typing import Callable, NoReturn, Sequence

from tqdm import tqdm

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix from the message alone (raised with that message)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError)


class _TqdmHandler(logging.Handler):
    """Writes each record to stderr with `tqdm.write` (which clears and redraws open bars)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class _Formatter(logging.Formatter):
    """INFO records as their message; warnings and errors as `warning: message`."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno <= logging.INFO:
            return message
        return f"{record.levelname.lower()}: {message}"


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging: ssp_jax's records at `level`, every library's at WARNING (JAX's INFO
    lines such as "Unable to initialize backend 'tpu'" stay out), one line each, through
    tqdm. Replaces the root logger's handlers (absl's included)."""
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("ssp_jax").setLevel(level)


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Sets up logging, calls `main(argv)` and exits with its code; user errors become one
    line and exit 2."""
    setup_logging()
    try:
        code = main(sys.argv[1:] if argv is None else list(argv))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
