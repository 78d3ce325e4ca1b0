"""The one exception type users see.

Anything that is the user's to fix (a bad recipe key, a missing file, an offline hub request) is raised as a
`FusebenchError` whose message is a paragraph naming the problem, where it is and the fix. The CLI prints it
without a traceback and exits with status 2; everything else is a bug and keeps its traceback.
"""


class FusebenchError(Exception):
    """A problem with the user's input or environment, explained in plain words."""
