"""The library's own user-error type: a mistake in what the caller asked for or handed over (an argument, a file, a
name). The command line prints it as one line with exit status 2; any other exception is a bug and keeps its
traceback. It subclasses ValueError (and ArgumentTypeError also TypeError), so API callers catch what they expect."""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user asked for; the message names the argument or file and the rule."""


class ArgumentTypeError(UserError, TypeError):
    """An argument of the wrong type."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist."""


class OutOfMemoryError(UserError, MemoryError):
    """A call whose estimated working memory exceeds what the device has free, refused before allocating."""
