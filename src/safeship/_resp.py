"""A resumable RESP2 reader: the bytes of a connection in, its completed replies out.

:class:`Reader` reads replies as safeship's Redis connection hands them on (a bulk or
simple string is bytes, a nil bulk string or nil array is None, an integer is an int, an
error reply is a :class:`ReplyError` value, inside an array too, an array is a list), and
keeps what it has read across :meth:`Reader.feed` calls instead of reading a held reply
again from its start, so a reply costs time linear in its size however it is cut:

* the arrays still open are an explicit stack (their items so far and how many are left);
* the body of a bulk string whose length is known is held as the chunks it came in and
  joined once, when the last of its bytes arrives;
* a line cut short (a header, an integer, a simple string, an error) is held so too, and
  only the new bytes are searched for its end (its ``\\r`` may end the previous chunk).

Garbage is refused with ``ValueError`` (the caller aborts the connection; the reader is
not used again): an unknown type byte, a length or count that is not an integer, a
negative one other than -1, a bulk string not followed by ``\\r\\n``, more than
:data:`MAX_DEPTH` nested arrays, or a line longer than :data:`MAX_LINE` bytes. A number
is read by ``int``, which allows blanks around it, a ``+`` and ``_`` between digits.
"""

from __future__ import annotations

from typing import Any

from safeship.errors import SafeshipError

__all__ = ["MAX_DEPTH", "MAX_LINE", "GarbledReplyError", "Reader", "ReplyError"]

#: The most arrays a reply may nest (a deeper one is refused, not recursed into).
MAX_DEPTH = 1000
#: The longest line, type byte included, ``\r\n`` not: 1 MiB, far above any status or
#: error line a server sends (a bulk string's body is no line and has no such bound).
MAX_LINE = 1024 * 1024


class GarbledReplyError(SafeshipError, ValueError):
    """Bytes that are no RESP2 reply; ``replies`` holds the replies completed before them
    in the same feed (they are whole and may be handed on)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies


class ReplyError(SafeshipError):
    """An error reply (``-ERR ...``) to one command: a value in a reply, handed to the
    caller as redis-py's ``ResponseError``."""


def _garbage(buf: bytes, at: int) -> ValueError:
    return ValueError(f"not a RESP2 reply: {buf[at : at + 16]!r}")


class Reader:
    """The replies in a stream of bytes, read once each: see :meth:`feed`.

    ``copied`` counts the bytes this reader copied to hold or join input cut between
    feeds (not the replies' own values): a measure of its work for tests, linear in the
    input however the input is cut.
    """

    __slots__ = (
        "_busy",
        "_items",
        "_left",
        "_line",
        "_line_size",
        "_need",
        "_parts",
        "_size",
        "_stack",
        "copied",
    )

    def __init__(self) -> None:
        self._stack: list[tuple[list[Any], int]] = []  # the outer open arrays
        self._items: list[Any] | None = None  # the innermost open array's items so far
        self._left = 0  # how many items it still lacks
        self._line: list[bytes] = []  # the chunks of a line cut short (none: no such line)
        self._line_size = 0  # their bytes
        self._parts: list[bytes] = []  # the chunks of a bulk string's body cut short
        self._need = 0  # bytes it still lacks, its \r\n included (0: no such body)
        self._size = 0  # the length of that body
        self._busy = False  # any of those held, or an array open
        self.copied = 0

    @property
    def held(self) -> int:
        """Bytes held of a line or a bulk string's body cut short (0: none)."""
        if self._need:
            return self._size + 2 - self._need
        return self._line_size if self._line else 0

    def feed(self, data: bytes) -> list[Any]:
        """The top-level replies completed by ``data``, the connection's next bytes, in
        order (none, one or many); raises :class:`GarbledReplyError` (a ``ValueError``) on bytes
        that are no RESP2, with the replies completed before them."""
        out: list[Any] = []
        try:
            if self._busy:
                out = self._resume(data, out)
            else:
                # the common case first: nothing held, ``data`` is one whole reply, not an array
                end = data.find(b"\r\n")
                if 0 < end <= MAX_LINE:
                    kind = data[0]
                    if kind == 36:  # $ bulk string
                        length = int(data[1:end])
                        if (
                            end + length + 4 == len(data)
                            and length >= 0
                            and data[-2] == 13
                            and data[-1] == 10
                        ):
                            return [data[end + 2 : -2]]
                    elif end + 2 == len(data):
                        if kind == 58:  # : integer
                            return [int(data[1:end])]
                        if kind == 43:  # + simple string
                            return [data[1:end]]
                        if kind == 45:  # - error
                            return [ReplyError(data[1:end].decode(errors="replace"))]
                out = self._run(data, 0, out)
        except ValueError as exc:
            raise GarbledReplyError(str(exc), out) from None
        self._busy = bool(self._need or self._line) or self._items is not None
        return out

    def _run(self, buf: bytes, at: int, out: list[Any]) -> list[Any]:
        """Read ``buf`` from ``at`` on, appending each completed top-level reply to ``out``;
        holds what ``buf`` ends inside of."""
        stack = self._stack
        items = self._items
        left = self._left
        size = len(buf)
        value: Any
        while at < size:
            end = buf.find(b"\r\n", at)
            if end < 0:
                self._items, self._left = items, left
                self._hold_line(buf, at)
                return out
            if end - at > MAX_LINE:
                raise ValueError(f"a RESP2 line longer than {MAX_LINE} bytes")
            kind = buf[at]
            if kind == 36:  # $ bulk string
                length = int(buf[at + 1 : end])
                if length >= 0:
                    start = end + 2
                    at = start + length
                    if at + 2 > size:
                        self._items, self._left = items, left
                        self._hold_body(buf, start, length)
                        return out
                    if buf[at] != 13 or buf[at + 1] != 10:
                        raise _garbage(buf, at)
                    value = buf[start:at]
                    at += 2
                elif length == -1:
                    value = None
                    at = end + 2
                else:
                    raise ValueError(f"a RESP2 bulk string length below -1: {length}")
            elif kind == 42:  # * array
                count = int(buf[at + 1 : end])
                at = end + 2
                if count > 0:
                    if items is not None:
                        if len(stack) >= MAX_DEPTH - 1:
                            raise ValueError(f"a RESP2 reply nests more than {MAX_DEPTH} arrays")
                        stack.append((items, left))
                    items, left = [], count
                    continue
                if count == 0:
                    if len(stack) >= MAX_DEPTH - 1 and items is not None:
                        raise ValueError(f"a RESP2 reply nests more than {MAX_DEPTH} arrays")
                    value = []
                elif count == -1:
                    value = None
                else:
                    raise ValueError(f"a RESP2 array count below -1: {count}")
            elif kind == 58:  # : integer
                value = int(buf[at + 1 : end])
                at = end + 2
            elif kind == 43:  # + simple string
                value = buf[at + 1 : end]
                at = end + 2
            elif kind == 45:  # - error
                value = ReplyError(buf[at + 1 : end].decode(errors="replace"))
                at = end + 2
            else:
                raise _garbage(buf, at)
            # the value is complete: the next item of the innermost open array, or a reply
            if items is None:
                out.append(value)
                continue
            items.append(value)
            left -= 1
            while not left:  # it completes that array, perhaps the ones around it too
                if not stack:
                    out.append(items)
                    items = None
                    break
                value = items
                items, left = stack.pop()
                items.append(value)
                left -= 1
        self._items, self._left = items, left
        return out

    def _deliver(self, value: Any, out: list[Any]) -> None:
        """``value`` complete (outside :meth:`_run`'s loop): as :meth:`_run` does."""
        items = self._items
        if items is None:
            out.append(value)
            return
        items.append(value)
        left = self._left - 1
        stack = self._stack
        while not left:
            if not stack:
                out.append(items)
                items = None
                break
            value = items
            items, left = stack.pop()
            items.append(value)
            left -= 1
        self._items, self._left = items, left

    def _hold_line(self, buf: bytes, at: int) -> None:
        """Hold the line ``buf`` ends inside of, from ``at``."""
        if buf[at] not in b"$*:+-":  # refused now, not once a newline comes
            raise _garbage(buf, at)
        rest = buf[at:] if at else buf
        if at:
            self.copied += len(rest)
        if len(rest) > MAX_LINE + 1:  # one more: a "\r" may end the line in the next chunk
            raise ValueError(f"a RESP2 line longer than {MAX_LINE} bytes")
        self._line, self._line_size = [rest], len(rest)

    def _hold_body(self, buf: bytes, start: int, length: int) -> None:
        """Hold the start of a bulk string's body of ``length`` bytes, from ``start``."""
        rest = buf[start:] if start else buf
        if start and rest:
            self.copied += len(rest)
        self._parts = [rest] if rest else []
        self._need = length + 2 - len(rest)
        self._size = length

    def _resume(self, data: bytes, out: list[Any]) -> list[Any]:
        """Complete the held line or body with ``data``, then read on as usual."""
        at = 0
        size = len(data)
        if self._line:
            line = self._line
            if line[-1][-1] == 13 and data[:1] == b"\n":  # "\r" ended the last chunk
                joined = b"".join(line)
                self.copied += len(joined)
                head, at = joined[:-1], 1
            else:
                end = data.find(b"\r\n")
                if end < 0:
                    if data:
                        line.append(data)
                        self._line_size += size
                        if self._line_size > MAX_LINE + 1:
                            raise ValueError(f"a RESP2 line longer than {MAX_LINE} bytes")
                    return out
                line.append(data[:end])
                head = b"".join(line)
                at = end + 2
            self._line, self._line_size = [], 0
            if len(head) > MAX_LINE:
                raise ValueError(f"a RESP2 line longer than {MAX_LINE} bytes")
            self.copied += len(head) + 2
            self._run(head + b"\r\n", 0, out)  # this line alone: it may start a body
            if self._line:  # cannot be: the line had its end
                raise _garbage(head, 0)
        need = self._need
        if need:
            avail = size - at
            if avail < need:
                if avail:
                    self._parts.append(data[at:] if at else data)
                    if at:
                        self.copied += avail
                self._need = need - avail
                return out
            parts = self._parts
            stop = at + need
            if need >= 2:  # the "\r\n" is in ``data``
                if data[stop - 2 : stop] != b"\r\n":
                    raise _garbage(data, stop - 2)
                if parts:
                    parts.append(data[at : stop - 2])
                    value = b"".join(parts)
                    self.copied += len(value) + stop - 2 - at
                else:
                    value = data[at : stop - 2]
            else:  # the "\r" came already, as the body's last held byte
                joined = b"".join(parts)
                self.copied += 2 * len(joined)
                if joined[-1] != 13 or data[at] != 10:
                    raise _garbage(data, at)
                value = joined[:-1]
            if len(value) != self._size:  # cannot be: the counts say it is whole
                raise _garbage(value, 0)
            self._parts, self._need = [], 0
            self._deliver(value, out)
            at = stop
        return self._run(data, at, out)
