"""Reading a batch's rows and an upload's columns: good CSV and JSONL read in order, and every
bad file refused whole with a message that names the file and, where there is one, the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputError
from core.inputs import read_columns, read_items
from core.store import BatchItem


def refused(call: object) -> str:
    assert callable(call)
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


# -- read_items ----------------------------------------------------------------------------------


def test_a_csv_is_read_in_order_with_gold_and_ids() -> None:
    data = b"id,text,label\na1,first input,yes\na2,second input,\n"
    items = read_items(data, gold_column="label", id_column="id", name="good.csv")
    assert items == [
        BatchItem(index=0, item_id="a1", text="first input", gold="yes"),
        BatchItem(index=1, item_id="a2", text="second input", gold=None),
    ]


def test_without_an_id_column_the_ids_count_from_one() -> None:
    items = read_items(b"text\none\ntwo\nthree\n", name="plain.csv")
    assert [i.item_id for i in items] == ["1", "2", "3"]
    assert [i.gold for i in items] == [None, None, None]


def test_a_jsonl_is_read_line_by_line_skipping_blank_lines() -> None:
    data = b'{"text": "one", "gold": "yes", "id": 7}\n\n{"text": "two", "gold": "no", "id": 8}\n'
    items = read_items(data, gold_column="gold", id_column="id", name="rows.jsonl")
    assert [(i.item_id, i.text, i.gold) for i in items] == [("7", "one", "yes"), ("8", "two", "no")]


def test_a_path_is_read_and_named_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "rows.ndjson"
    path.write_text('{"text": "from a file"}\n', encoding="utf-8")
    assert [i.text for i in read_items(path)] == ["from a file"]
    assert read_columns(path) == ["text"]
    missing = tmp_path / "absent.csv"
    assert refused(lambda: read_items(missing)) == f"{missing}: no such file"


def test_a_byte_order_mark_is_not_part_of_the_first_column() -> None:
    items = read_items("\ufefftext\nhello\n".encode(), name="bom.csv")
    assert [i.text for i in items] == ["hello"]


def test_a_missing_column_is_named_with_the_columns_there_are() -> None:
    message = refused(lambda: read_items(b"body,verdict\nhi,yes\n", name="odd.csv"))
    assert message == "odd.csv: no column 'text' (columns: body, verdict)"
    message = refused(lambda: read_items(b"text\nhi\n", gold_column="gold", name="nogold.csv"))
    assert message == "nogold.csv: no column 'gold' (columns: text)"


@pytest.mark.parametrize("data", [b"", b"  \n\n\t"])
def test_an_empty_file_is_refused(data: bytes) -> None:
    assert refused(lambda: read_items(data, name="empty.csv")) == "empty.csv: the file is empty"


def test_a_file_that_is_not_utf8_names_the_byte() -> None:
    data = "text\ncafé\n".encode("latin-1")
    message = refused(lambda: read_items(data, name="latin.csv"))
    assert message.startswith("latin.csv: not UTF-8 (byte 8);")


def test_a_malformed_jsonl_line_is_named_by_its_number() -> None:
    data = b'{"text": "fine"}\n\n{"text": "cut off\n{"text": "also fine"}\n'
    message = refused(lambda: read_items(data, name="broken.jsonl"))
    assert message.startswith("broken.jsonl: line 3: not valid JSON (")
    data = b'{"text": "fine"}\n[1, 2]\n'
    message = refused(lambda: read_items(data, name="list.jsonl"))
    assert message == "list.jsonl: line 2: expected a JSON object"


def test_a_duplicate_id_is_named_with_its_line() -> None:
    data = b"id,text\na,one\nb,two\na,three\n"
    message = refused(lambda: read_items(data, id_column="id", name="dup.csv"))
    assert message == "dup.csv: line 4: id 'a' appears twice"


def test_a_header_without_rows_is_refused() -> None:
    message = refused(lambda: read_items(b"text,label\n", name="header.csv"))
    assert message == "header.csv: the file has a header but no rows"


def test_an_empty_text_cell_and_a_ragged_row_are_named_by_line() -> None:
    message = refused(lambda: read_items(b"text,label\nfirst,yes\n,no\n", name="gap.csv"))
    assert message == "gap.csv: line 3: the 'text' cell is empty"
    message = refused(lambda: read_items(b"text\nfine\ntoo,many\n", name="wide.csv"))
    assert message == "wide.csv: line 3: more cells than columns"


def test_a_malformed_header_is_an_input_error() -> None:
    data = b"x" * 200_000 + b"\n"
    message = refused(lambda: read_items(data, name="huge.csv"))
    assert message.startswith("huge.csv: line 1: field larger than field limit")


# -- read_columns --------------------------------------------------------------------------------


def test_the_columns_of_a_csv_come_from_its_header_alone() -> None:
    # the second row is ragged: only read_items, with the mapping chosen, looks at it
    assert read_columns(b"id,,text\na,b\n", name="cols.csv") == ["id", "text"]


def test_the_columns_of_a_jsonl_are_every_key_in_first_seen_order() -> None:
    data = b'{"text": "one", "gold": "yes"}\n\n{"text": "two"}\n{"prompt": "three"}\n'
    assert read_columns(data, name="rows.jsonl") == ["text", "gold", "prompt"]


def test_a_broken_jsonl_line_shows_while_reading_columns() -> None:
    data = b'{"text": "fine"}\n{"text": "cut off\n'
    message = refused(lambda: read_columns(data, name="broken.jsonl"))
    assert message.startswith("broken.jsonl: line 2: not valid JSON (")


def test_read_columns_refuses_what_read_items_refuses_with_the_same_words() -> None:
    latin = "text\ncafé\n".encode("latin-1")
    huge = b"x" * 200_000 + b"\n"
    cases = ((b"", "empty.csv"), (latin, "latin.csv"), (b"[1]\n", "list.jsonl"), (huge, "h.csv"))
    for data, name in cases:
        assert refused(lambda d=data, n=name: read_columns(d, name=n)) == refused(
            lambda d=data, n=name: read_items(d, name=n)
        )


def test_a_header_with_no_names_has_no_columns() -> None:
    assert read_columns(b",,\n1,2,3\n", name="blank.csv") == []
    assert read_columns(b"{}\n", name="empty-object.jsonl") == []


# -- rows a lenient reader would have read wrong -------------------------------------------------


def test_an_unclosed_quote_is_refused_at_the_line_it_opens() -> None:
    # a lenient reader makes "never closed\nmore\n" one cell and reports on one row, not three
    data = b'text\nfine\n"never closed\nmore\nlast\n'
    message = refused(lambda: read_items(data, name="open.csv"))
    assert message == (
        "open.csv: line 3: a quoted cell opened here runs to the end of the file: "
        "a quote is not closed"
    )
    data = b'text,label\n"open,a\nnext,b\n"third",a\n'
    message = refused(lambda: read_items(data, name="open.csv"))
    assert message.startswith("open.csv: line 2: a quoted cell opened here runs to line 4")


def test_a_quoted_cell_may_still_span_lines() -> None:
    items = read_items(b'text,label\n"two\nlines",a\nnext,b\n', gold_column="label", name="ok.csv")
    assert [(i.text, i.gold) for i in items] == [("two\nlines", "a"), ("next", "b")]


def test_a_short_row_and_a_repeated_header_are_refused() -> None:
    message = refused(lambda: read_items(b"text,label\none,a\ntwo\n", name="short.csv"))
    assert message == "short.csv: line 3: fewer cells than columns"
    message = refused(lambda: read_columns(b"text,label,text\na,b,c\n", name="dup.csv"))
    assert message == "dup.csv: line 1: column 'text' appears twice in the header"


def test_jsonl_cells_are_values_and_keys_appear_once() -> None:
    message = refused(lambda: read_items(b'{"text": "a", "text": "b"}\n', name="k.jsonl"))
    assert message == "k.jsonl: line 1: key 'text' appears twice in one object"
    message = refused(lambda: read_items(b'{"text": {"a": 1}}\n', name="o.jsonl"))
    assert message == "o.jsonl: line 1: the 'text' cell is a JSON object, not a single value"
    message = refused(lambda: read_items(b'{"text": "a", "gold": NaN}\n', name="n.jsonl"))
    assert message == "n.jsonl: line 1: NaN is not a value JSON allows"
    data = b'{"text": "order", "gold": {"quantity": 2, "urgent": true}, "id": 7}\n'
    items = read_items(data, gold_column="gold", id_column="id", name="g.jsonl")
    assert (items[0].item_id, items[0].gold) == ("7", '{"quantity":2,"urgent":true}')
