"""dictd reader on a dictionary the tests write: index + gzip data, FOLDOC and Jargon shaped entries."""

import gzip

import pytest

from qastream.datasets import BadRows, detect_format, open_dataset
from qastream.datasets.dictd import B64, clean_definition, decode_b64, read_dictd

LONG = " ".join(f"word{i}" for i in range(50))


def encode_b64(value: int) -> str:
    digits = ""
    while True:
        digits = B64[value % 64] + digits
        value //= 64
        if value == 0:
            return digits


def write_dictionary(tmp_path, entries, *, extra_index_lines=(), name="tiny"):
    """entries: (index headword, entry text); returns the index path."""
    data, index = b"", []
    for headword, text in entries:
        raw = text.encode()
        index.append(f"{headword}\t{encode_b64(len(data))}\t{encode_b64(len(raw))}")
        data += raw
    (tmp_path / f"{name}.index").write_text("\n".join([*index, *extra_index_lines]) + "\n")
    with gzip.open(tmp_path / f"{name}.dict.dz", "wb") as handle:
        handle.write(data)
    return tmp_path / f"{name}.index"


FOLDOC_ENTRY = ("compiler\n\n   <programming, tool> A program that converts another program\n"
                "   from some {source language} to {machine language}.\n\n   " + LONG + "\n\n"
                "   [\"A citation\", Some Journal 1(2) (1989)].\n\n"
                "   {(http://example.org/compilers)}\n\n   (1994-11-07)\n\n")
JARGON_ENTRY = ("hacker\n n.\n\n    [originally, someone who makes furniture with an axe]\n\n"
                "    1. A person who enjoys exploring the details of {programmable systems}. " + LONG + "\n\n")


@pytest.mark.parametrize("text, value", [("A", 0), ("B", 1), ("/", 63), ("BA", 64), ("Dp8J", 3 * 64**3 + 41 * 64**2 + 60 * 64 + 9)])
def test_decode_b64_uses_dictd_alphabet(text, value):
    assert decode_b64(text) == value
    assert encode_b64(value) == text


def test_reads_question_and_clean_answer(tmp_path):
    index = write_dictionary(tmp_path, [("compiler", FOLDOC_ENTRY), ("hacker", JARGON_ENTRY)])
    bad = BadRows()
    records = list(read_dictd(str(index), bad))
    assert [r.question for r in records] == ["What is compiler?", "What is hacker?"]
    compiler = records[0].answer
    assert compiler.startswith("A program that converts another program from some source language to machine")
    for markup in ("{", "}", "<programming", "(1994-11-07)", "http", "citation", "compiler\n"):
        assert markup not in compiler
    assert records[1].answer.startswith("1. A person who enjoys")  # etymology and part of speech gone
    assert records[0].category == "tiny" and records[0].id == "compiler"
    assert bad.total == 0


def test_headword_as_written_and_aliases_read_once(tmp_path):
    entry = "Celeron\nceleron processor\n\n   <processor> " + LONG + "\n"
    index = write_dictionary(tmp_path, [("celeron", entry)])
    # An alias line pointing at the same offset and length.
    lines = index.read_text().splitlines()
    index.write_text("\n".join([lines[0], lines[0].replace("celeron", "celeron processor", 1)]) + "\n")
    records = list(read_dictd(str(index), BadRows()))
    assert [r.question for r in records] == ["What is Celeron?"]


def test_word_limits_and_bad_lines_are_counted(tmp_path):
    short = "tiny\n\n   Too short to score.\n"
    long = "huge\n\n   " + " ".join(["w"] * 301) + "\n"
    info = "00-database-info\n\n   " + LONG + "\n"
    index = write_dictionary(tmp_path, [("tiny", short), ("huge", long), ("00-database-info", info),
                                        ("ok", "ok\n\n   " + LONG + "\n")],
                             extra_index_lines=["broken line", "past\tzzzz\tB", "notb64\t!!\tB"])
    bad = BadRows()
    records = list(read_dictd(str(index), bad))
    assert [r.question for r in records] == ["What is ok?"]
    assert bad.as_dict() == {
        "definition under 40 words": 1, "definition over 300 words": 1,
        "index line without 3 tab-separated fields": 1, "offset or length outside the data file": 1,
        "offset or length not in dictd base64": 1,
    }
    assert bad.first_seen["index line without 3 tab-separated fields"] == "tiny.index:5"


def test_clean_definition_keeps_cross_reference_text():
    assert clean_definition("   See {native compiler}, {optimising\n   compiler}.") == \
        "See native compiler, optimising compiler."


def test_open_dataset_detects_dictd(tmp_path):
    index = write_dictionary(tmp_path, [("ok", "ok\n\n   " + LONG + "\n")])
    assert detect_format(str(index)) == "dictd"
    assert detect_format("foldoc") == "dictd"
    assert len(list(open_dataset(str(index), BadRows()))) == 1
    assert len(list(open_dataset(str(tmp_path / "tiny.dict.dz"), BadRows()))) == 1


def test_missing_dictionary_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_dataset(str(tmp_path / "absent.index"), BadRows())
