"""The one "did you mean" helper: every unknown name hubbub reports gets the same hint."""

from __future__ import annotations

from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the choice closest to ``word``, or ``""`` if none is close.

    Args:
        word: what the user wrote.
        choices: the names that would have been accepted.

    Returns:
        The hint, starting with a space so it can be appended to a message as is.
    """
    import difflib  # only for an error message: not imported by every process (issue #18)

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
