"""One exception tree for every failure a user should see as a one-line message."""


class AnnexsyncError(Exception):
    """A failure explained to the user in one line; ``exit_code`` is the process status."""

    exit_code = 1


class NotARepositoryError(AnnexsyncError):
    """The path is not inside a git working tree annexsync can use."""


class ConfigError(AnnexsyncError):
    """A git config value under ``annexsync.*`` cannot be understood."""


class InvalidNameError(AnnexsyncError):
    """A node name is not a valid single ref component."""


class AlreadyRunningError(AnnexsyncError):
    """Another assistant already holds this repository's lock."""


class NotRunningError(AnnexsyncError):
    """The command needs a running assistant and there is none."""


class UsageError(AnnexsyncError):
    """Options that make no sense together, or a value out of range: exit 2, as argparse."""

    exit_code = 2
