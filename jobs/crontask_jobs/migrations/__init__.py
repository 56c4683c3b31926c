"""Alembic migrations, shipped in the package so the job image can run `crontask-job migrate`."""
