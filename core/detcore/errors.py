"""User errors: printed as one line, exit code 2, no traceback."""


class UserError(Exception):
    """Something the user can fix. The message says what is wrong and how to fix it."""

    exit_code = 2


class MissingDependency(UserError):
    """A package, tool or device the requested work needs is not present."""

    exit_code = 3


class PluginError(UserError):
    """A plugin failed (often on a config value the user set); ``DETCORE_DEBUG=1`` shows the traceback."""

    exit_code = 1
