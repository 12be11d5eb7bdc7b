"""What every experiment module's worker jobs share: their scale settings."""

from __future__ import annotations

from dataclasses import replace


def job_settings(job: dict):
    """The job's scale settings, with ``reproduce --epochs`` applied to its training config."""
    settings = job["settings"]
    if job.get("epochs") is not None:
        settings = replace(settings, training=replace(settings.training, epochs=job["epochs"]))
    return settings
