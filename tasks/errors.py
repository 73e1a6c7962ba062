"""UserError: a mistake the user can fix. Its message says what is wrong and what to change.

Every command exits 0 when done, 2 on a UserError (one message, no traceback), 1 on a
bug (one line that says so, with the log file that holds the traceback) and 128 + N when
signal N (SIGTERM, SIGINT, SIGHUP) stopped it: tasks/run/boundary.py is that guard."""

EXIT_BUG = 1
EXIT_USER = 2


class UserError(Exception):
    """Raised for bad input (config, paths, checkpoints). The commands print it as one
    message, without a traceback, and exit with status 2."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the run stops there, its last checkpoint (written
    before the bad step) is kept, and the message names the step, the loss terms and what
    to change before `resume=`."""


class DiskFull(UserError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT). The writers in tasks.io.files
    leave the previous file (or nothing) in place of a partial one, so nothing already written
    is lost; the run dir is kept for `resume=`."""


class RunDirLocked(UserError):
    """Another process writes into this run dir (or runs this stage of a chain dir): its lock
    file names it. The dir is that process's: nothing in it is touched."""
