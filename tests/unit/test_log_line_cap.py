"""`LOG_LINE_MAX_BYTES` where output is read: the engine's framed log stream, build output, git's output.

Each reader hands on a line longer than the cap in pieces of at most the cap, cut on UTF-8 character
boundaries, and holds no more than about the cap of a line while it waits for the rest of it.
"""

from __future__ import annotations

import io
import struct
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from deploy_service.runner.docker_streams import OutputLines, log_lines
from deploy_service.runner.lines import read_lines, split_text

CAP = 1024
TEXT = "début " + "é✓x" * 2000  # 12 KB of 1-, 2- and 3-byte characters: byte cuts fall inside characters


class CountingRaw(io.BytesIO):
    """A response body that remembers the most it was asked for at once and how much was read in all."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_read = 0

    def read(self, size: int | None = -1) -> bytes:
        self.largest_read = max(self.largest_read, size if size is not None and size >= 0 else len(self.getvalue()))
        return super().read(size)


class FakeResponse:
    def __init__(self, data: bytes) -> None:
        self.raw = CountingRaw(data)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def frame(stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream_id, len(payload)) + payload


def stamped(text: bytes, second: int = 1) -> bytes:
    return f"2026-01-02T03:04:0{second}.000000000Z ".encode() + text


def assert_pieces_of(pieces: list[str], text: str) -> None:
    assert "".join(pieces) == text, "nothing lost, nothing replaced"
    assert all(len(piece.encode()) <= CAP for piece in pieces)
    assert all(len(piece.encode()) > CAP - 4 for piece in pieces[:-1]), "the cap is used"


def test_split_text_cuts_on_character_boundaries() -> None:
    assert split_text("short", CAP) == ["short"]
    assert split_text("", CAP) == [""]
    assert_pieces_of(split_text(TEXT, CAP), TEXT)


def test_a_long_log_line_comes_in_pieces_with_the_stamp_of_its_start() -> None:
    encoded = TEXT.encode()
    # The engine splits long lines into partial entries, each a frame with its own stamp.
    body = frame(1, stamped(encoded[:5000], 1)) + frame(1, stamped(encoded[5000:] + b"\n", 2))
    body += frame(2, stamped(b"short\n", 3)) + frame(1, stamped(b"\n", 4)) + frame(1, stamped(b"no newline", 5))
    response = FakeResponse(body)

    lines = list(log_lines(response, replica=3, guard=nullcontext, max_bytes=CAP))  # type: ignore[arg-type]

    stdout = [line for line in lines if line.stream == "stdout"]
    assert_pieces_of([line.line for line in stdout[:-2]], TEXT)
    assert {line.timestamp for line in stdout[:-2]} == {datetime(2026, 1, 2, 3, 4, 1, tzinfo=UTC)}
    assert [line.line for line in stdout[-2:]] == ["", "no newline"]
    assert [line.line for line in lines if line.stream == "stderr"] == ["short"]
    assert all(line.replica == 3 for line in lines) and response.closed


def test_the_log_reader_never_reads_a_huge_frame_at_once() -> None:
    """A frame header may announce up to 4 GiB: the reader reads it in pieces and hands them on as they come."""
    payload = stamped(b"x" * (CAP * 50))  # no newline at all
    response = FakeResponse(frame(1, payload))

    lines = log_lines(response, replica=0, guard=nullcontext, max_bytes=CAP)  # type: ignore[arg-type]
    first = next(lines)

    assert first.line == "x" * CAP
    assert response.raw.largest_read <= CAP
    assert response.raw.tell() <= 3 * CAP, "the first piece went on before the rest of the line was read"
    assert [line.line for line in lines] == ["x" * CAP] * 49


def test_build_output_without_newlines_is_handed_on_in_pieces() -> None:
    emitted: list[str] = []
    output = OutputLines(emitted.append, max_bytes=CAP)
    for start in range(0, len(TEXT), 100):  # the engine's build stream comes in small chunks
        output.feed(TEXT[start : start + 100])
        assert len(output.partial.encode()) <= CAP, "the partial line stays under the cap"
    output.feed("\nnext line\n")
    output.line("status " + "y" * (CAP + 10))

    assert_pieces_of(emitted[:-3], TEXT)
    assert emitted[-3:] == ["next line", "status " + "y" * (CAP - 7), "y" * 17]


def test_git_output_lines_are_read_in_pieces() -> None:
    stream = io.BytesIO((TEXT + "\r\nsecond\n\nlast without newline").encode())
    largest: list[int] = []
    readline = stream.readline

    def bounded_readline(size: Any = -1) -> bytes:
        largest.append(size)
        return readline(size)

    stream.readline = bounded_readline  # type: ignore[method-assign]

    lines = list(read_lines(stream, CAP))

    assert lines[-3:] == ["second", "", "last without newline"]
    assert_pieces_of(lines[:-3], TEXT)
    assert 0 < max(largest) <= CAP + 1
