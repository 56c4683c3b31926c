import sys

from crontask_jobs.cli import main

sys.exit(main())
