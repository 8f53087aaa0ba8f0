"""User-facing errors: one line that names the field, the bad value and the fix."""


class PriorflowError(Exception):
    """An error caused by the user's input, shown as one line without a traceback.

    The command line prints ``error: <message>`` and exits with status 2.
    """


class ConfigError(PriorflowError, ValueError):
    """A run config, model card or sampler setting that cannot be used as given."""


class ModelError(PriorflowError):
    """A model directory (card or checkpoint) that cannot be loaded."""


class ArchiveError(PriorflowError):
    """A latent archive that is missing, malformed or does not cover the requested dates."""


class StoreError(PriorflowError):
    """A run store that is missing, incomplete, or does not match its done marks."""


class CheckError(PriorflowError):
    """A failed prior check turned into an error (the reasons, one per line)."""
