"""Yahoo Answers CSV reader on files the tests write."""

import csv

from qastream.datasets import BadRows, open_dataset
from qastream.datasets.yahoo import clean, read_yahoo


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    return path


def test_question_is_title_and_content_with_escapes_resolved(tmp_path):
    path = write_csv(tmp_path / "yahoo.csv", [
        ["5", "why doesn't an optical mouse work on a glass table?", "or even on some surfaces?",
         "Optical mice use an LED\\nand a camera.\\n\\nGlass is transparent &amp; smooth."],
        ["2", "What is the speed\nof light?", "", "About 300,000 km/s<br />in a vacuum."],
    ])
    records = list(read_yahoo(path, BadRows()))
    assert records[0].question == "why doesn't an optical mouse work on a glass table? or even on some surfaces?"
    assert records[0].answer == "Optical mice use an LED and a camera. Glass is transparent & smooth."
    assert records[0].category == "Computers & Internet"
    assert records[1].question == "What is the speed of light?"  # multi-line quoted field
    assert records[1].answer == "About 300,000 km/s in a vacuum."
    assert records[1].category == "Science & Mathematics"


def test_bad_rows_are_counted_not_fatal(tmp_path):
    path = write_csv(tmp_path / "yahoo.csv", [
        ["class", "title", "content", "best answer"],      # header, skipped
        ["1", "only three", "columns"],
        ["1", "", "", "an answer to nothing"],
        ["1", "a question", "", ""],
        [],
        ["3", "fine", "", "yes"],
    ])
    bad = BadRows()
    records = list(read_yahoo(path, bad))
    assert [r.question for r in records] == ["fine"]
    assert bad.as_dict() == {"3 columns instead of 4": 1, "no title and no content": 1, "no best answer": 1}
    assert bad.first_seen["3 columns instead of 4"] == "yahoo.csv:2"


def test_unterminated_quote_does_not_crash(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('"1","good","","answer"\n"2","unterminated,"","x"\n')
    bad = BadRows()
    records = list(open_dataset(str(path), bad))
    assert [r.question for r in records] == ["good"]
    assert bad.total == 1


def test_clean_collapses_whitespace_and_escapes():
    assert clean("  a\\nb\\tc  &lt;d&gt; ") == "a b c <d>"
