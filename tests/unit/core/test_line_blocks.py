from __future__ import annotations

import pytest

from airflow_provider_openai_batch.core.line_blocks import LineBlocks, file_lines, line_lists, opened_lines


def test_lines_cut_by_a_chunk_end_are_joined_and_a_last_line_without_newline_is_kept():
    chunks = [b'{"a":1}\n{"b"', b"", b':2}\n{"c":3}\n\n', b'{"d":4}']
    lines = LineBlocks(chunks)
    assert list(LineBlocks(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b"", b'{"d":4}']
    assert list(lines.blocks()) == [[b'{"a":1}'], [b'{"b":2}', b'{"c":3}', b""], [b'{"d":4}']]


def test_a_line_longer_than_several_chunks_comes_whole():
    line = b"x" * 25
    chunks = [line[i : i + 4] for i in range(0, 25, 4)] + [b"\nend\n"]
    assert list(LineBlocks(chunks)) == [line, b"end"]


@pytest.mark.parametrize("as_blocks", [True, False])
def test_line_lists_keep_order_and_size_from_blocks_and_from_plain_iterables(as_blocks):
    lines = [str(n).encode() for n in range(23)]
    data = b"\n".join(lines) + b"\n"
    source = LineBlocks([data[:30], data[30:]]) if as_blocks else iter(lines)
    lists = list(line_lists(source, 5))
    assert [line for chunk in lists for line in chunk] == lines
    assert all(0 < len(chunk) <= 5 for chunk in lists)


def test_opened_lines_opens_only_when_read_and_closes_at_the_end(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"1\n2\n3")
    opened = []

    def opener():
        handle = path.open("rb")
        opened.append(handle)
        return handle

    lines = opened_lines(opener, block=2)
    assert opened == []
    assert list(lines) == [b"1", b"2", b"3"]
    assert opened[0].closed
    assert list(file_lines(str(path))) == [b"1", b"2", b"3"]
