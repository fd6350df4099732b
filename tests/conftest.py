"""MINIGPT_RLHF_BREAK=<exercise> runs the suite with that exercise's one-line break applied (tests/exercises.py,
docs/exercises.md). Unset, nothing here changes any test."""

import os


def pytest_configure(config):
    name = os.environ.get("MINIGPT_RLHF_BREAK")
    if name:
        from exercises import BY_NAME, apply

        if name not in BY_NAME:
            raise SystemExit(f"MINIGPT_RLHF_BREAK={name}: no such exercise; expected one of {', '.join(BY_NAME)}")
        apply(name)
