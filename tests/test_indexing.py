"""Indexing's records: summaries that add up, and the one loop that drives a generator."""

from engine.core.steps import Steps, run_steps
from engine.library.indexing import IndexSummary


def test_summaries_of_two_runs_add_up_to_one():
    first = IndexSummary(
        indexed=2,
        unchanged=1,
        moved=1,
        repaired=1,
        refreshed=2,
        audio_s=30.0,
        elapsed_s=2.0,
        skipped=[("/a/bad.mp3", "a damaged MP3")],
        notes=["kept 1 tracks"],
    )
    second = IndexSummary(
        indexed=1,
        removed=2,
        skipped=[("/b/x.ogg", "cannot decode")],
        notes=["/b is empty"],
        audio_s=10.0,
        elapsed_s=1.0,
        cancelled=True,
    )
    both = first + second
    assert (both.indexed, both.unchanged, both.moved, both.removed, both.repaired) == (
        3,
        1,
        1,
        2,
        1,
    )
    assert both.refreshed == 2
    assert both.skipped == [("/a/bad.mp3", "a damaged MP3"), ("/b/x.ogg", "cannot decode")]
    assert both.notes == ["kept 1 tracks", "/b is empty"]  # in the order the runs made them
    assert (both.audio_s, both.elapsed_s, both.cancelled, both.replaced) == (40.0, 3.0, True, False)
    assert IndexSummary() + first == first == first + IndexSummary()
    assert first.notes == ["kept 1 tracks"]  # adding makes a new summary; neither part changes


def test_steps_hand_over_each_step_and_keep_the_return_value():
    def work():
        yield 1
        yield 2
        return "done"

    steps = Steps(work())
    assert list(steps) == [1, 2] and steps.result == "done"
    seen = []
    assert run_steps(work(), seen.append) == "done" and seen == [1, 2]
