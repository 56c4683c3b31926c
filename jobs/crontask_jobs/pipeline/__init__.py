"""The conversation pipeline: named stages, each with a timeout, a savepoint and a criticality."""

from crontask_jobs.pipeline.stage import Stage, StageContext, StageError

__all__ = ["Stage", "StageContext", "StageError"]
