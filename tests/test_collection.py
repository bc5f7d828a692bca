"""Batch work collects garbage less often, and leaves the collector as it found it."""

from __future__ import annotations

import gc
import threading

from webapp.collection import YOUNG_GENERATION_THRESHOLD, fewer_collections


def test_batch_work_freezes_what_was_alive_and_raises_the_young_threshold_then_restores_both():
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] >= YOUNG_GENERATION_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_nested_batch_work_keeps_the_setting_until_the_outermost_ends():
    before = gc.get_threshold()
    with fewer_collections():
        with fewer_collections():
            pass
        assert gc.get_threshold()[0] >= YOUNG_GENERATION_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_jobs_in_two_threads_share_the_setting_and_the_last_to_end_restores_it():
    before = gc.get_threshold()
    first_inside, second_done = threading.Event(), threading.Event()
    seen_after_second: list[int] = []

    def first_job() -> None:
        with fewer_collections():
            first_inside.set()
            second_done.wait(5)
            seen_after_second.append(gc.get_threshold()[0])

    worker = threading.Thread(target=first_job)
    worker.start()
    assert first_inside.wait(5)
    with fewer_collections():
        pass
    second_done.set()
    worker.join(5)
    assert seen_after_second == [max(before[0], YOUNG_GENERATION_THRESHOLD)]
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
