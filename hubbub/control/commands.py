"""Remote control on the wire: a :class:`Command` sent on the ``control`` channel, and the
:class:`Reply` each addressed worker sends back on ``replies``.

Both are small JSON objects. A command names its ``destination`` (worker names) or none (a
broadcast); a worker answers only commands addressed to it, with the command's id, so that
the sender matches replies to what it asked. When the hub has signing keys both are signed
with :class:`~hubbub.signing.Signer` (the same HMAC as task messages), and a worker with keys
refuses what is unsigned or tampered.

Anyone who can write to the broker can write to these channels, so decoding never raises:
:func:`decode_command` and :func:`decode_reply` return a :class:`Refused` with the reason
for anything that is not a well-formed, correctly signed message.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hubbub.errors import HubbubError, MessageError
from hubbub.signing import Signer, unverified_body

__all__ = ["COMMANDS", "CONTROL", "REPLIES", "Command", "ControlTimeout", "Refused", "Reply",
           "decode_command", "decode_reply", "encode_command", "encode_reply"]

CONTROL = "control"  # the plane channel commands travel on (broadcast to every worker)
REPLIES = "replies"  # the plane channel replies travel on
T = TypeVar("T")

KIND = "hubbub-control"  # "kind" of every command and reply: tells ours from foreign data
VERSION = 1
MAX_SIZE = 1024 * 1024  # bytes: larger control data is refused before it is parsed

# The commands a worker answers, with what each one does (the CLI's help reads this).
COMMANDS: dict[str, str] = {
    "ping": "answer, to show the worker is alive",
    "active": "list the tasks running now",
    "reserved": "list the tasks held but not started yet",
    "scheduled": "list held tasks whose eta is in the future",
    "registered": "list the task names the worker knows",
    "stats": "counters, pools, uptime and memory",
    "conf": "the worker's settings, secrets masked",
    "revoke": "revoke task ids (with terminate: stop them if running)",
    "shutdown": "stop gracefully, as SIGTERM does",
    "pool_grow": "add N slots to a lane's pool",
    "pool_shrink": "remove N slots from a lane's pool",
    "autoscale": "set a lane's autoscale bounds",
    "add_queue": "start consuming a queue",
    "cancel_queue": "stop consuming a queue",
    "loglevel": "change the worker's log level",
}


class ControlTimeout(HubbubError, TimeoutError):
    """Addressed workers did not answer a control command in time (or, for a broadcast, no
    worker did). ``replies`` holds the replies that did come; ``missing`` the names of the
    addressed workers that did not answer."""

    def __init__(self, message: str, replies: list[Reply[Any]] | None = None,
                 missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.replies = replies or []
        self.missing = missing or []


@dataclass(frozen=True, slots=True)
class Command:
    """One control command.

    Attributes:
        command: what to do, one of :data:`COMMANDS`.
        arguments: its arguments (JSON values).
        destination: the names of the workers that should act, or None for every worker.
        sender: who sent it (for logs), e.g. ``host:pid``.
        reply_to: the channel to answer on.
        id: matches replies to this command.
    """

    command: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination: tuple[str, ...] | None = None
    sender: str = ""
    reply_to: str = REPLIES
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def addressed_to(self, worker: str) -> bool:
        """Whether worker ``worker`` should act on this command."""
        return self.destination is None or worker in self.destination


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """One worker's answer to one command.

    Attributes:
        worker: the name of the worker that answered.
        value: what the command returned (JSON values) when it worked.
        error: why the command failed on this worker, or None when it worked.
        id: the command's id.
    """

    worker: str
    value: T
    error: str | None = None
    id: str = ""

    @property
    def ok(self) -> bool:
        """True when the command worked on this worker (``error`` is None)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class Refused:
    """Data on a control channel that is not a message to act on, and why."""

    reason: str


def encode_command(command: Command, signer: Signer | None) -> bytes:
    """The wire form of ``command``, signed when ``signer`` is given."""
    return _seal({"kind": KIND, "v": VERSION, "type": "command", "id": command.id,
                  "command": command.command, "arguments": command.arguments,
                  "destination": (None if command.destination is None
                                  else list(command.destination)),
                  "sender": command.sender, "reply_to": command.reply_to}, signer)


def encode_reply(reply: Reply[Any], signer: Signer | None) -> bytes:
    """The wire form of ``reply``, signed when ``signer`` is given.

    A value JSON cannot hold is sent as its ``repr`` (a reply must always go out).
    """
    return _seal({"kind": KIND, "v": VERSION, "type": "reply", "id": reply.id,
                  "worker": reply.worker, "value": reply.value, "error": reply.error}, signer)


def decode_command(data: bytes, signer: Signer | None) -> Command | Refused:
    """The command in ``data``, or why it is refused; never raises.

    With ``signer``, only a correctly signed command is accepted; without, a signature is
    not checked (a worker without keys trusts its broker).
    """
    found = _open(data, signer, "command")
    if isinstance(found, Refused):
        return found
    name, arguments = found.get("command"), found.get("arguments")
    destination, sender = found.get("destination"), found.get("sender", "")
    reply_to = found.get("reply_to", REPLIES)
    if not isinstance(name, str) or not name:
        return Refused("a control command without a command name")
    if not isinstance(arguments, dict):
        return Refused(f"control command {name!r}: arguments must be an object")
    if destination is not None and not (isinstance(destination, list)
                                        and all(isinstance(d, str) for d in destination)):
        return Refused(f"control command {name!r}: destination must be a list of names")
    if not isinstance(sender, str) or not isinstance(reply_to, str):
        return Refused(f"control command {name!r}: sender and reply_to must be text")
    return Command(name, arguments, None if destination is None else tuple(destination),
                   sender, reply_to, found["id"])


def decode_reply(data: bytes, signer: Signer | None) -> Reply[Any] | Refused:
    """The reply in ``data``, or why it is refused; never raises."""
    found = _open(data, signer, "reply")
    if isinstance(found, Refused):
        return found
    worker, error = found.get("worker"), found.get("error")
    if not isinstance(worker, str) or not worker:
        return Refused("a control reply without a worker name")
    if error is not None and not isinstance(error, str):
        return Refused(f"control reply of {worker!r}: error must be text")
    return Reply(worker, found.get("value"), error, found["id"])


def _seal(data: dict[str, Any], signer: Signer | None) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=repr).encode()
    return body if signer is None else signer.sign(body)


def _open(data: bytes, signer: Signer | None, kind: str) -> dict[str, Any] | Refused:
    if not isinstance(data, bytes | bytearray | memoryview):
        return Refused(f"control data of type {type(data).__name__}, not bytes")
    data = bytes(data)
    if len(data) > MAX_SIZE:
        return Refused(f"control data of {len(data)} bytes, over the {MAX_SIZE} limit")
    if signer is not None:
        try:
            body = signer.verify(data)
        except MessageError as exc:
            return Refused(str(exc))
    else:
        body = unverified_body(data)
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return Refused("control data that is not JSON")
    if not isinstance(found, dict) or found.get("kind") != KIND:
        return Refused("data on the control plane that is not a hubbub control message")
    if found.get("v") != VERSION:
        return Refused(f"control message of version {found.get('v')!r}; this hubbub reads "
                       f"version {VERSION}: upgrade the older side")
    if found.get("type") != kind:
        return Refused(f"a control {found.get('type')!r} where a {kind} was expected")
    if not isinstance(found.get("id"), str) or not found["id"]:
        return Refused(f"a control {kind} without an id")
    return found
