"""Workflows: signatures, chain, group, chord and callbacks (see docs/workflows.md).

A canvas is plain data until it is sent; it then travels inside its messages, and a chord
joins its header through an atomic count of distinct finished ids in the result store.
"""

from __future__ import annotations

from hubbub.canvas.group_result import GroupResult
from hubbub.canvas.signature import (
    Canvas,
    Chain,
    Chord,
    Group,
    Signature,
    chain,
    chord,
    from_dict,
    group,
)

__all__ = ["Canvas", "Chain", "Chord", "Group", "GroupResult", "Signature", "chain", "chord",
           "from_dict", "group"]
