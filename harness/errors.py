"""The one exception type for mistakes a user can make (bad YAML key, missing file, ...).

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps
its traceback.
"""


class HarnessError(Exception):
    """A user-caused error whose message names the offending key or path."""
