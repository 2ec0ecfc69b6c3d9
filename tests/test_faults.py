"""`python -m app.faults`: the fault table says what each test recorded and names every test that did not pass."""
from app.faults import write_table


def test_the_fault_table_shows_recorded_rows_and_names_tests_without_one(tmp_path):
    rows = [{"fault": "a | pipe", "sees": "line one\nline two", "kept": "all", "test": "tests/test_a.py::test_one"},
            {"fault": "silent", "sees": "", "kept": "the run", "test": "tests/test_a.py::test_two"}]
    outcomes = {"tests/test_a.py::test_one": "passed", "tests/test_a.py::test_two": "passed",
                "tests/test_b.py::test_slurm": "skipped"}
    text = write_table(rows, outcomes, 12.0, tmp_path / "reliability.md").read_text()
    assert "3 tests, 2 passed, 0 failed, 1 skipped, in 12 s" in text
    assert "| a \\| pipe | `line one`<br>`line two` | all | `tests/test_a.py::test_one` |" in text
    assert "| silent | nothing | the run |" in text
    assert "Not shown in this regeneration (no row): `tests/test_b.py::test_slurm` (skipped)" in text
