"""``safeship._resp.Reader``: RESP2 replies read once each, however the bytes are cut.

Every reply kind reads as the value it was written from; a stream cut at any
point (byte by byte too, ``\\r`` and ``\\n`` apart) reads as the whole stream does; the
work done is linear in the input (counted, not timed, but for one doubling check); and
garbage, nesting past the bound and over-long lines are refused with ``ValueError``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from safeship._resp import MAX_DEPTH, MAX_LINE, GarbledReplyError, Reader, ReplyError
from safeship.errors import SafeshipError


def dump(value: Any) -> bytes:
    """``value`` as RESP2: bytes a bulk string, None a nil bulk string, an int an
    integer, a ReplyError an error, a list an array."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, ReplyError):
        return b"-%b\r\n" % str(value).encode()
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(dump(item) for item in value)
    raise TypeError(value)


def plain(value: Any) -> Any:
    """``value`` with each error reply as ``("error", message)``: comparable by value."""
    if isinstance(value, Exception):
        return ("error", type(value).__name__ == "ReplyError", str(value))
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def feed_all(chunks: Iterable[bytes]) -> list[Any]:
    reader = Reader()
    replies: list[Any] = []
    for chunk in chunks:
        replies.extend(reader.feed(chunk))
    return replies


def parse_all(buf: bytes) -> list[Any]:
    """The replies a fresh reader reads from a whole stream, in one feed."""
    return Reader().feed(buf)


def chunked(buf: bytes, size: int) -> list[bytes]:
    return [buf[at : at + size] for at in range(0, len(buf), size)]


STREAM = b"".join(
    [
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"$4\r\na\r\nb\r\n",  # a body holding "\r\n" is read by its length
        b":0\r\n:-42\r\n:9223372036854775807\r\n",
        b"+OK\r\n+\r\n+a\rb\nc\r\n",
        b"-ERR wrong number of arguments\r\n",
        b"-\xff\r\n",
        b"*0\r\n*-1\r\n",
        b"*3\r\n$3\r\nfoo\r\n:7\r\n*2\r\n*0\r\n*1\r\n-WRONGTYPE no\r\n",
        b"*4\r\n$-1\r\n*-1\r\n+QUEUED\r\n$2\r\nhi\r\n",
        b":1\r\n",
    ]
)
EXPECTED = [
    b"hello",
    b"",
    None,
    b"a\r\nb",
    0,
    -42,
    9223372036854775807,
    b"OK",
    b"",
    b"a\rb\nc",
    ("error", True, "ERR wrong number of arguments"),
    ("error", True, "\ufffd"),
    [],
    None,
    [b"foo", 7, [[], [("error", True, "WRONGTYPE no")]]],
    [None, None, b"QUEUED", b"hi"],
    1,
]


# --- every reply kind ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b":1\r\n", 1),
        (b":-1\r\n", -1),
        (b"+OK\r\n", b"OK"),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*2\r\n$1\r\na\r\n:2\r\n", [b"a", 2]),
        (b"*2\r\n*1\r\n*0\r\n$-1\r\n", [[[]], None]),
    ],
)
def test_each_reply_kind_reads_as_its_value(data: bytes, reply: Any) -> None:
    assert Reader().feed(data) == [reply]


def test_an_error_reply_is_a_reply_error_value_at_the_top_and_inside_arrays() -> None:
    (error,) = Reader().feed(b"-ERR no such key\r\n")
    assert type(error) is ReplyError and isinstance(error, SafeshipError)
    assert str(error) == "ERR no such key"
    (array,) = Reader().feed(b"*3\r\n:1\r\n-ERR one\r\n*1\r\n-ERR two\r\n")
    assert array[0] == 1
    assert type(array[1]) is ReplyError and str(array[1]) == "ERR one"
    assert type(array[2][0]) is ReplyError and str(array[2][0]) == "ERR two"


def test_a_stream_of_many_replies_reads_in_order() -> None:
    replies = Reader().feed(STREAM)
    assert plain(replies) == EXPECTED
    assert plain(replies) == plain(parse_all(STREAM))


def test_no_bytes_and_a_partial_reply_complete_nothing() -> None:
    reader = Reader()
    assert reader.feed(b"") == []
    assert reader.feed(b"*2\r\n:1\r\n") == []
    assert reader.feed(b"") == []
    assert reader.feed(b":2\r\n:3") == [[1, 2]]
    assert reader.feed(b"\r\n") == [3]


def test_a_reader_reads_on_after_each_kind_of_reply() -> None:
    reader = Reader()
    for _ in range(3):
        assert plain(reader.feed(STREAM)) == EXPECTED
        for chunk in chunked(STREAM, 7):
            reader.feed(chunk)
    assert reader.feed(b"$5\r\nhello\r\n") == [b"hello"]


# --- any cut -------------------------------------------------------------------------


def test_the_stream_cut_at_every_offset_reads_as_it_does_whole() -> None:
    for cut in range(len(STREAM) + 1):
        assert plain(feed_all([STREAM[:cut], STREAM[cut:]])) == EXPECTED, cut


def test_the_stream_cut_at_every_pair_of_offsets_reads_as_it_does_whole() -> None:
    for first in range(len(STREAM) + 1):
        for second in range(first, len(STREAM) + 1):
            chunks = [STREAM[:first], STREAM[first:second], STREAM[second:]]
            assert plain(feed_all(chunks)) == EXPECTED, (first, second)


def test_the_stream_fed_byte_by_byte_reads_as_it_does_whole() -> None:
    reader = Reader()
    replies: list[Any] = []
    for at in range(len(STREAM)):
        replies.extend(reader.feed(STREAM[at : at + 1]))
    assert plain(replies) == EXPECTED


@pytest.mark.parametrize(
    "chunks",
    [
        [b"+OK\r", b"\n"],
        [b"+OK\r", b"\n:1\r\n"],
        [b"+OK", b"\r", b"\n"],
        [b"+O", b"K", b"\r", b"", b"\n"],
        [b"+OK\r\n:1\r", b"\n"],
        [b"$2\r", b"\nOK\r\n"],
        [b"$2\r\nOK\r", b"\n"],
        [b"$2\r\nOK", b"\r", b"\n"],
        [b"$2\r\nO", b"K\r", b"\n"],
        [b"*1\r", b"\n+OK\r", b"\n"],
        [b"-ERR\r", b"\n"],
    ],
)
def test_a_newline_cut_between_its_cr_and_lf_ends_the_line(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    assert plain(feed_all(chunks)) == plain(parse_all(whole)) == plain(Reader().feed(whole))


def test_a_lone_cr_or_lf_is_part_of_a_line_even_at_a_cut() -> None:
    assert feed_all([b"+a\r", b"b\r\n"]) == [b"a\rb"]
    assert feed_all([b"+a\n", b"b\r\n"]) == [b"a\nb"]
    assert feed_all([b"+a", b"\nb\r", b"c\r", b"\r\n"]) == [b"a\nb\rc\r"]
    assert Reader().feed(b"+a\nb\rc\r\r\n") == [b"a\nb\rc\r"]


REPLIES = st.recursive(
    st.none()
    | st.binary(max_size=40)
    | st.sampled_from([b"\r\n", b"\r", b"\n", b"$1\r\n", b"*1\r\n"])
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20).map(
        ReplyError
    ),
    lambda children: st.lists(children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=300)
@given(
    replies=st.lists(REPLIES, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=5_000), max_size=12),
)
def test_random_replies_cut_at_random_points_read_as_they_were_written(
    replies: list[Any], cuts: list[int]
) -> None:
    stream = b"".join(dump(reply) for reply in replies)
    offsets = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(offsets)]
    assert plain(feed_all(chunks)) == plain(replies) == plain(parse_all(stream))


@settings(max_examples=100)
@given(replies=st.lists(REPLIES, min_size=1, max_size=4))
def test_random_replies_fed_byte_by_byte_read_as_they_were_written(replies: list[Any]) -> None:
    stream = b"".join(dump(reply) for reply in replies)
    assert plain(feed_all(chunked(stream, 1))) == plain(replies)


# --- linear work ---------------------------------------------------------------------


def body_of(size: int) -> bytes:
    body = bytes(range(256)) * (size // 256) + b"\r\n" * ((size % 256) // 2)
    assert len(body) == size
    return body


def big_array(count: int, size: int = 20_000) -> bytes:
    body = body_of(size)
    return b"*%d\r\n" % count + b"".join(b"$%d\r\n%b\r\n" % (size, body) for _ in range(count))


def test_a_big_array_in_64_kb_chunks_copies_each_byte_a_bounded_number_of_times() -> None:
    stream = big_array(2_000)
    reader = Reader()
    replies: list[Any] = []
    for chunk in chunked(stream, 65_536):
        replies.extend(reader.feed(chunk))
    assert len(replies) == 1 and len(replies[0]) == 2_000
    assert replies[0][0] == replies[0][-1] == body_of(20_000)
    assert reader.copied <= 2 * len(stream)


def test_an_8_mb_bulk_string_in_64_kb_chunks_is_joined_once() -> None:
    size = 8 << 20
    stream = b"$%d\r\n%b\r\n" % (size, b"\x00\r\n" * (size // 3) + b"xy")
    reader = Reader()
    replies: list[Any] = []
    for chunk in chunked(stream, 65_536):
        replies.extend(reader.feed(chunk))
    assert len(replies) == 1 and len(replies[0]) == size
    assert reader.copied <= size + 2 * 65_536


def test_a_long_line_fed_byte_by_byte_is_joined_once() -> None:
    stream = b"+" + b"x" * (64 * 1024 - 1) + b"\r\n:1\r\n"
    reader = Reader()
    replies: list[Any] = []
    for at in range(len(stream)):
        replies.extend(reader.feed(stream[at : at + 1]))
    assert replies == [b"x" * (64 * 1024 - 1), 1]
    assert reader.copied <= 3 * len(stream)


def test_deep_arrays_and_many_small_items_fed_byte_by_byte_copy_a_bounded_amount() -> None:
    inner = [b"ab", 1, None, [b"c"] * 50] * 20
    stream = b"*1\r\n" * (MAX_DEPTH - 2) + dump(inner)
    reader = Reader()
    replies: list[Any] = []
    for at in range(len(stream)):
        replies.extend(reader.feed(stream[at : at + 1]))
    (reply,) = replies
    for _ in range(MAX_DEPTH - 2):
        (reply,) = reply
    assert reply == inner
    assert reader.copied <= 4 * len(stream)


@pytest.mark.xdist_group("exclusive")  # a timing comparison: beside no other timing test
def test_twice_the_array_takes_about_twice_the_time() -> None:
    """CPU time (not wall time: the suite's other workers share the machine), the best of
    several runs, each size in turn; quadratic work would take four times as long."""
    streams = {count: chunked(big_array(count, 100), 65_536) for count in (40_000, 80_000)}
    best = dict.fromkeys(streams, float("inf"))
    for _ in range(7):
        for count, chunks in streams.items():
            start = time.process_time()
            feed_all(chunks)
            best[count] = min(best[count], time.process_time() - start)
    assert best[80_000] < 3.5 * best[40_000], best


# --- refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"?1\r\n",
        b"hello\r\n",
        b"\r\n",
        b"1\r\n",
        b"$abc\r\n",
        b"$\r\n",
        b"$1.5\r\n",
        b"$-2\r\n",
        b"*x\r\n",
        b"*-2\r\n",
        b":\r\n",
        b":12a\r\n",
        b"$3\r\nabcXY",
        b"$3\r\nabc\rX",
        b"$3\r\nabc\nX",
        b":1\r\n?",
        b"*2\r\n:1\r\n!\r\n",
        b"\x00",
    ],
)
def test_garbage_is_refused_whole_or_cut(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError aborts the connection
        Reader().feed(data)
    with pytest.raises(ValueError):  # noqa: PT011
        feed_all(chunked(data, 1))
    for cut in range(1, len(data)):
        with pytest.raises(ValueError):  # noqa: PT011
            feed_all([data[:cut], data[cut:]])


@pytest.mark.parametrize(
    ("innermost", "value"),
    [(b"*0\r\n", []), (b"*1\r\n:1\r\n", [1]), (b"*2\r\n*-1\r\n$-1\r\n", [None, None])],
)
def test_a_thousand_nested_arrays_are_read(innermost: bytes, value: Any) -> None:
    stream = b"*1\r\n" * (MAX_DEPTH - 1) + innermost  # a nil array opens no level
    for chunks in ([stream], chunked(stream, 1), chunked(stream, 5)):
        (reply,) = feed_all(chunks)
        for _ in range(MAX_DEPTH - 1):
            (reply,) = reply
        assert reply == value


@pytest.mark.parametrize("innermost", [b"*0\r\n", b":1\r\n", b"*1\r\n"])
def test_more_than_a_thousand_nested_arrays_are_refused_without_recursion(
    innermost: bytes,
) -> None:
    assert MAX_DEPTH == 1000
    stream = b"*1\r\n" * MAX_DEPTH + innermost
    if innermost == b":1\r\n":
        stream = b"*1\r\n" * (MAX_DEPTH + 1) + innermost
    for chunks in ([stream], chunked(stream, 1), chunked(stream, 5)):
        with pytest.raises(ValueError, match="nests more than 1000"):
            feed_all(chunks)
    with pytest.raises(ValueError, match="nests more than 1000"):
        Reader().feed(b"*1\r\n" * 100_000)  # a hostile depth: refused, no RecursionError


def test_nesting_counts_open_arrays_only() -> None:
    sibling = b"*1\r\n" * (MAX_DEPTH - 1) + b"*0\r\n"
    assert len(feed_all([sibling * 3])) == 3  # a thousand deep, three times over
    reader = Reader()
    for _ in range(3):
        assert len(reader.feed(sibling)) == 1


def test_a_line_longer_than_the_bound_without_a_newline_is_refused() -> None:
    assert MAX_LINE == 1024 * 1024
    line = b"+" + b"x" * (MAX_LINE + 6 * 1024)
    with pytest.raises(ValueError, match="longer than"):
        Reader().feed(line)
    with pytest.raises(ValueError, match="longer than"):
        feed_all(chunked(line, 1024))
    with pytest.raises(ValueError, match="longer than"):
        feed_all([b":1\r\n$", b"1" * (MAX_LINE + 6 * 1024)])
    with pytest.raises(ValueError, match="longer than"):
        feed_all(chunked(line, 7))


def test_a_line_at_the_bound_is_read_and_one_byte_more_is_refused_even_when_it_ends() -> None:
    longest = b"+" + b"x" * (MAX_LINE - 1)
    for chunks in ([longest + b"\r\n"], [longest, b"\r\n"], [longest + b"\r", b"\n"]):
        assert feed_all(chunks) == [longest[1:]]
    over = longest + b"x"
    for chunks in (
        [over + b"\r\n"],
        [over, b"\r\n"],
        [over + b"\r", b"\n"],
        [over[:9], over[9:] + b"\r\n"],
    ):
        with pytest.raises(ValueError, match="longer than"):
            feed_all(chunks)


def test_a_bulk_string_body_has_no_line_bound() -> None:
    body = b"z" * (4 * MAX_LINE)
    stream = b"$%d\r\n%b\r\n" % (len(body), body)
    assert Reader().feed(stream) == [body]
    assert feed_all(chunked(stream, 1000)) == [body]


def test_garbage_after_whole_replies_hands_those_replies_on_with_the_error() -> None:
    with pytest.raises(GarbledReplyError) as raised:
        Reader().feed(b"$1\r\na\r\n:2\r\n?garbage\r\n")
    assert raised.value.replies == [b"a", 2]
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, SafeshipError)
    reader = Reader()
    assert reader.feed(b"*2\r\n:1\r\n") == []
    with pytest.raises(GarbledReplyError) as raised:
        reader.feed(b":2\r\n:3\r\n!")  # the array completes, then garbage
    assert raised.value.replies == [[1, 2], 3]
