"""JSON array and JSON Lines readers on files the tests write."""

import json

import pytest

from qastream.datasets import BadRows, open_dataset, open_datasets
from qastream.datasets.jsonfile import read_json, read_objects


@pytest.mark.parametrize("shape", ["array", "lines"])
def test_seed_and_plain_field_names(tmp_path, shape):
    objects = [{"question_text": "What is Kafka?", "original_answer": "A log.", "answer": "LLM text", "id": 7},
               {"question": "What is Faust?", "answer": "Streams in Python.", "category": "python"}]
    path = tmp_path / ("d.json" if shape == "array" else "d.jsonl")
    path.write_text(json.dumps(objects, indent=2) if shape == "array" else
                    "\n".join(json.dumps(o) for o in objects) + "\n")
    records = list(read_json(path, BadRows()))
    assert [(r.question, r.answer, r.id, r.category) for r in records] == [
        ("What is Kafka?", "A log.", "7", None),  # original_answer wins over the LLM's answer
        ("What is Faust?", "Streams in Python.", None, "python"),
    ]


def test_jsonl_bad_lines_are_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "ok?", "answer": "yes"}\n'
                    "not json\n"
                    "\n"
                    '[1, 2]\n'
                    '{"answer": "no question"}\n'
                    '{"question": "   ", "answer": "blank question"}\n'
                    '{"question": "no answer?"}\n'
                    '{"question": "empty answer?", "answer": ""}\n'
                    '{"question": 5, "answer": "not text"}\n')
    bad = BadRows()
    assert [r.question for r in read_json(path, bad)] == ["ok?"]
    assert bad.as_dict() == {
        "invalid JSON line": 1, "not a JSON object (list)": 1, "no question_text or question field": 1,
        "question is empty or not a string": 2, "no original_answer or answer field": 1,
        "answer is empty or not a string": 1,
    }
    assert bad.first_seen["invalid JSON line"].startswith("d.jsonl:2")


def test_array_broken_in_the_middle_keeps_what_came_before(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"question": "a?", "answer": "1"}, {"question": "b?", "answer": "2"}, {"question": oops}]')
    bad = BadRows()
    assert [r.question for r in read_json(path, bad)] == ["a?", "b?"]
    assert bad.as_dict() == {"invalid JSON (the rest of the array is unreadable)": 1}


def test_array_with_non_objects_and_empty_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(' \n[1, "x", {"question": "q?", "answer": "a"}]')
    bad = BadRows()
    assert len(list(read_objects(path, bad))) == 1
    assert bad.as_dict() == {"not a JSON object (int)": 1, "not a JSON object (str)": 1}
    (tmp_path / "e.json").write_text("[ ]")
    assert list(open_dataset(str(tmp_path / "e.json"), BadRows())) == []


def test_unknown_extension_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        open_dataset(str(tmp_path / "data.txt"), BadRows())


def test_several_data_sets_are_all_opened_before_reading(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"question": "a?", "answer": "1"}\n')
    with pytest.raises(FileNotFoundError):
        open_datasets([str(tmp_path / "a.jsonl"), str(tmp_path / "missing.jsonl")], BadRows())
    (tmp_path / "b.json").write_text('[{"question": "b?", "answer": "2"}]')
    records = open_datasets([str(tmp_path / "a.jsonl"), str(tmp_path / "b.json")], BadRows())
    assert [r.question for r in records] == ["a?", "b?"]
