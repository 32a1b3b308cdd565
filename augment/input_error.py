"""The error of a user's bad input (:class:`InputError`), importable from :mod:`augment.imageio` as it
always was; its own module so that the modules :mod:`augment.imageio` is made of can raise it."""


class InputError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""

    # Named as before the split (augment.imageio re-exports it): tracebacks and pickles say the same.
    __module__ = "augment.imageio"
