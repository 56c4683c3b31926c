"""crontask maintenance jobs: recover, decay, process, run against PostgreSQL."""
