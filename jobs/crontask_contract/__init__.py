"""What the jobs and the operator must agree on, and nothing else: the run report a job pod
writes to its termination message (`report`) and the durations both sides parse (`durations`).

Only the standard library is imported here, so both images can depend on it without pulling in
the other's stack (import-linter enforces this).
"""
