"""The writers' buffer: runs of rows with their arrival time, taken oldest first, and the
bulk check of already-shaped rows."""

from __future__ import annotations

from typing import Any

import pytest

from safeship.data import BatchRowError
from safeship.data._batch_core import RowBuffer, normalise_rows


def test_partial_takes_keep_the_oldest_arrival_exact() -> None:
    buffer = RowBuffer()
    buffer.extend(1.0, [(1,), (2,), (3,)])
    buffer.add(2.0, (4,))
    buffer.extend(3.0, [(5,), (6,)])
    buffer.extend(4.0, [])  # an empty run leaves no trace
    assert len(buffer) == 6 and buffer.oldest == 1.0
    assert buffer.take(2) == [(1,), (2,)] and buffer.oldest == 1.0  # (3,) came at 1.0
    assert buffer.take(2) == [(3,), (4,)] and buffer.oldest == 3.0
    assert buffer.take(10) == [(5,), (6,)] and not buffer
    buffer.add(5.0, (7,))
    assert buffer.oldest == 5.0 and buffer.take(1) == [(7,)]


def test_shaped_rows_pass_as_they_are_and_others_are_normalised() -> None:
    rows = [(1, "a"), (2, "b")]
    assert normalise_rows(rows, ["id", "kind"]) is rows
    assert normalise_rows(iter(rows), ["id", "kind"]) == rows
    mixed: list[Any] = [(1, "a"), {"kind": "b", "id": 2}, [3, "c"]]
    assert normalise_rows(mixed, ["id", "kind"]) == [(1, "a"), (2, "b"), (3, "c")]
    with pytest.raises(BatchRowError, match="2 columns"):
        normalise_rows([(1, "a"), (2,)], ["id", "kind"])
    with pytest.raises(BatchRowError, match="mapping or a sequence"):
        normalise_rows([(1, "a"), 7], ["id", "kind"])  # type: ignore[list-item]
