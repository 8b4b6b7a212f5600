"""One small exception tree: the CLI maps it to exit codes, the UI shows ``str(err)``.

Every message is one line that says what was wrong, so it can be printed as is.
"""

from __future__ import annotations


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""

    exit_code = 1


class InputError(TallyError):
    """Bad input from a user: a flag, a file, a field. The CLI exits 2."""

    exit_code = 2


class ConfigError(InputError):
    """An unreadable or invalid ``tally.toml``, an unknown provider or model, a missing key."""


class PolicyError(InputError):
    """A policy that cannot be applied, e.g. a majority vote over free text."""


class ProviderError(TallyError):
    """A call to a model failed. ``retryable`` says whether another attempt may help.

    ``billed`` is False when the provider cannot have billed the attempt (it answered with an
    error status, or the request never reached it); None when nobody knows (a reply cut on the
    way, a timeout): the attempt's usage is then unknown, not zero."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        timeout: bool = False,
        billed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.timeout = timeout
        self.billed = billed


class StoreError(TallyError):
    """The store could not be read or written."""


class StoreURLError(StoreError, ConfigError):
    """A database URL that names no store Tally can open: bad configuration, so exit 2."""


class BusyError(InputError):
    """Work another live process holds: a batch running elsewhere. Refused, never shared."""


class ForbiddenError(InputError):
    """An action the acting identity's role does not allow (``core.auth``)."""


class NotSignedInError(ForbiddenError):
    """An action tried by nobody: sign-in is configured and the session is not signed in."""


class ConflictError(InputError):
    """Someone else changed it first (a review resolved or claimed by another reviewer): the
    late write is refused whole and nothing is overwritten."""


class NotFoundError(InputError):
    """An id (run, batch, sweep) that the store does not hold."""


def not_a_string(value: object, what: str) -> None:
    """Refuse a lone string where a list of names belongs: iterating ``"ab"`` would silently
    give the labels (or models) ``a`` and ``b``."""
    if isinstance(value, (str, bytes)):
        raise InputError(f"{what} must be a list, not the string {value!r}: write [{value!r}]")
