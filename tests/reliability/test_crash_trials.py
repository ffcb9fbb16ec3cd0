"""Three crash trials (bench/crash_trials.py): `clover index build` SIGKILLed at random moments, then resumed,
equals an uninterrupted build and verifies clean every time."""

from __future__ import annotations

import pytest

from bench.crash_trials import run_trials


@pytest.mark.slow
def test_builds_killed_at_random_moments_resume_to_the_uninterrupted_result(tmp_path):
    result = run_trials(tmp_path, trials=3, seed=0, workers=1, max_kills=2)
    problems = {trial["trial"]: trial["problems"] for trial in result["trials"] if trial["problems"]}
    assert not problems, problems
    kills = [kill for trial in result["trials"] for kill in trial["kills"]]
    assert len(kills) >= 3 and any(not kill["too_late"] for kill in kills)
