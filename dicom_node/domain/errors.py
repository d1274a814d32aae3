"""Domain errors. Front-ends map them to their own answers (DICOM status, HTTP code)."""


class DomainError(Exception):
    """Base class for errors a caller can act on."""


class InvalidValue(DomainError):
    """A value does not have the form the standard or the domain requires."""


class NotFound(DomainError):
    """The entity asked for does not exist."""


class AlreadyExists(DomainError):
    """A unique identifier is already taken."""
