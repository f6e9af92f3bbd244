"""What every command group shares: the console, exit codes, and error reporting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer
from rich.console import Console

__all__ = ["ExitCode", "console", "err_console", "fail", "reported_errors"]

console = Console()
err_console = Console(stderr=True)


class ExitCode(IntEnum):
    """Exit codes of ``dpn``: scripts can rely on them."""

    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad arguments (typer/click)
    CONFIG = 3  # missing or invalid home, settings, policy or mapping
    REFUSED = 4  # refused: bad input file, policy, or privacy budget
    UNREACHABLE = 5  # a service could not be reached
    TIMEOUT = 6  # waited as long as asked: the pooled query is still running at the coordinator
    AUDIT_FAILED = 7  # `dpn audit verify` found problems in a ledger (each is printed)


def fail(message: str, code: ExitCode, hint: str | None = None) -> typer.Exit:
    """Print ``message`` (and what to do next) to stderr; return the Exit to raise."""
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    if hint:
        err_console.print(f"[dim]next:[/dim] {hint}", highlight=False)
    return typer.Exit(int(code))


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the packages' exceptions into messages and meaningful exit codes."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    from coordinator import CoordinatorConfigError, EnrolmentError
    from crimmis_dpn._client import ClientError
    from node import (
        BudgetExceededError,
        IngestError,
        NodeConfigError,
        QueryRefusedError,
        storage_failure,
    )
    from protocols import StandardError, describe_validation_error

    try:
        yield
    except StandardError as exc:
        raise fail(str(exc), ExitCode.USAGE) from None
    except ValidationError as exc:
        raise fail(describe_validation_error(exc), ExitCode.USAGE) from None
    except (NodeConfigError, CoordinatorConfigError) as exc:
        raise fail(str(exc), ExitCode.CONFIG) from None
    except (IngestError, QueryRefusedError, BudgetExceededError) as exc:
        raise fail(str(exc), ExitCode.REFUSED) from None
    except EnrolmentError as exc:
        raise fail(str(exc), ExitCode.UNREACHABLE) from None
    except ClientError as exc:
        code = ExitCode.UNREACHABLE if exc.status is None else ExitCode.REFUSED
        hint = ("is the coordinator running? start it with `dpn coordinator serve`"
                if exc.status is None else None)
        raise fail(str(exc), code, hint) from None
    except (OperationalError, OSError) as exc:
        message = storage_failure(exc, owner="the")
        if message is None:
            raise
        raise fail(message, ExitCode.ERROR, "free space on the disk that holds the home "
                   "directory or database (see `df -h`), then run the command again") from None
