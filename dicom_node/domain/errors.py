"""Domain errors. Front-ends map them to their own answers (DICOM status, HTTP code)."""


class DomainError(Exception):
    """Base class for errors a caller can act on."""


class InvalidValue(DomainError):
    """A value does not have the form the standard or the domain requires.

    ``field`` names the offending input when there is one (HTTP answers 422 with it).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    """The entity asked for does not exist."""


class AlreadyExists(DomainError):
    """A unique identifier is already taken."""


class Conflict(DomainError):
    """The request clashes with the current state (e.g. an invalid transition).

    ``current`` names the state the entity is in, for the caller to show.
    """

    def __init__(self, message: str, *, current: str | None = None, existing: object = None):
        super().__init__(message)
        self.current = current
        self.existing = existing


class Gone(DomainError):
    """What the caller asks to resume from no longer exists (a trimmed change feed).

    ``feed_start`` is where what is left begins: reload, then resume from there.
    """

    def __init__(self, message: str, *, feed_start: int):
        super().__init__(message)
        self.feed_start = feed_start


class Forbidden(DomainError):
    """The caller may use this kind of action, but not on this record."""


class AuthenticationFailed(DomainError):
    """Wrong credentials, an expired or revoked token, or a locked account."""


class Cancelled(Exception):
    """Long work stopped at a safe point because the node is stopping (not a
    failure: what was done is consistent, the next run starts over or goes on)."""
