"""The one error type the command line reports as the user's: one line, exit code 2.

Anything a user can fix (a recipe key, a path, a damaged run file, a task
file, a model or server that does not fit) raises ``UserError`` with a message
that names what was wrong. Every other exception is a bug or a failure of the
machine (out of memory, a CUDA error) and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; its message names the key, file or value at fault."""
