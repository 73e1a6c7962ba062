"""UserError: a mistake the user can fix. Its message says what is wrong and what to change."""


class UserError(Exception):
    """Raised for bad input (config, paths, checkpoints). `train.py` prints it as one
    message, without a traceback, and exits with status 2."""
