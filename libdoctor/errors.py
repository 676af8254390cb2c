"""libdoctor's own error types: every failure a user's input can cause is one of these."""
from __future__ import annotations


class LibdoctorError(Exception):
    """Base class: carries a one-line message fit to show a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ElfError(LibdoctorError):
    """A file that cannot be read as an ELF object.

    ``loader_message`` is what glibc's ``open_verify`` says when it meets such a file
    as a search candidate (``elf/dl-load.c``); for the loader these are fatal.
    """

    kind = "elf-error"
    default_loader_message = "invalid ELF header"

    def __init__(self, message: str, loader_message: str | None = None) -> None:
        super().__init__(message)
        self.loader_message = loader_message or self.default_loader_message


class NotElfError(ElfError):
    kind = "not-elf"


class LdScriptError(NotElfError):
    """A GNU ld script named like a shared library (``libc.so`` on most distros)."""

    kind = "ld-script"

    def __init__(self, message: str, references: tuple[str, ...]) -> None:
        super().__init__(message)
        self.references = references


class TruncatedError(ElfError):
    kind = "truncated"
    default_loader_message = "file too short"


class CorruptError(ElfError):
    kind = "corrupt"
    default_loader_message = "cannot read file data"


class TooLargeError(ElfError):
    """A file beyond libdoctor's bounds on one object's facts (a real library never is): not modelled."""

    kind = "too-large"
    default_loader_message = "beyond libdoctor's bounds: not modelled (the loader itself would try it)"


class NotRegularError(ElfError):
    """A FIFO, socket or device under a library's name: the loader's ``open`` blocks on a FIFO (``ldd`` hangs
    too) or reads nothing from a device.  libdoctor never opens one for reading."""

    kind = "not-regular"
    default_loader_message = "not a regular file: the loader would block or fail opening it"


class UnsupportedError(ElfError):
    """Valid ELF of a kind libdoctor does not read (big-endian 64-bit on x86 hosts, say)."""

    kind = "unsupported"
    loader_skips = False  # a class other than the host's: the loader skips the file instead of failing


class UsageError(LibdoctorError):
    """A command line or configuration that cannot be acted on (exit status 2)."""
