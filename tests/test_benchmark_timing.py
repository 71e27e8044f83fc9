"""Tests of the shared benchmark report helpers."""

from benchmarks import timing


def test_report_header_lists_note_command_and_machine_without_omitted_facts():
    machine = {"cpu": "AMD EPYC", "cores usable": "2", "XLA_FLAGS": "--x=1"}
    lines = timing.report_header("Train step (CPU)", "python -m benchmarks.train_step",
                                 machine, "A note.", omit=("XLA_FLAGS",))
    assert lines == [
        "## Train step (CPU)", "",
        "A note.", "",
        "Command: `python -m benchmarks.train_step`", "",
        "- cpu: AMD EPYC", "- cores usable: 2",
    ]
    assert timing.report_header("T", "c", {"cpu": "x"}) == [
        "## T", "", "Command: `c`", "", "- cpu: x",
    ]
