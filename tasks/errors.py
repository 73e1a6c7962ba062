"""UserError: a mistake the user can fix. Its message says what is wrong and what to change.

Every command exits 0 when done, 2 on a UserError (one message, no traceback) and 1 on a
bug (one line that says so, with the log file that holds the traceback):
tasks/run/boundary.py is that guard."""

EXIT_BUG = 1
EXIT_USER = 2


class UserError(Exception):
    """Raised for bad input (config, paths, checkpoints). The commands print it as one
    message, without a traceback, and exit with status 2."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the run stops there, its last checkpoint (written
    before the bad step) is kept, and the message names the step, the loss terms and what
    to change before `resume=`."""
