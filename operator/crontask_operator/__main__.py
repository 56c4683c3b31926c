"""``crontask-operator``: parse the flags, set up logs and metrics, run Kopf with our settings.

``python -m crontask_operator`` does the same.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
import threading
from collections.abc import Sequence

import kopf

from crontask_operator import config as cfg
from crontask_operator import handlers, logs
from crontask_operator.metrics import Metrics


def ensure_identity() -> None:
    """Give Kopf a name for this process when it cannot make one itself.

    Kopf names itself ``user@host`` from the Unix user unless POD_ID is set; the image runs as
    uid 65532, which has no passwd entry, and getpass then raises. The chart sets POD_ID to the
    pod's name; this covers every other way of running the image.
    """
    if os.environ.get("POD_ID"):
        return
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["POD_ID"] = f"crontask-operator@{socket.gethostname()}/{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> None:
    config = cfg.from_args(argv)
    ensure_identity()
    logs.configure(config.log_format, config.log_level)
    metrics = Metrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    registry = kopf.OperatorRegistry()
    stop = threading.Event()
    runtime = handlers.register(registry, config, metrics, stop_flag=stop)
    logging.getLogger(__name__).info(
        "starting crontask-operator",
        extra={"namespaces": list(config.namespaces) or "*",
               "leader_election": f"{config.lease_namespace}/{config.lease_name}"
               if config.leader_election else "off",
               "job_image": config.job_defaults.image})
    kopf.run(
        registry=registry,
        settings=cfg.kopf_settings(config),
        standalone=True,
        liveness_endpoint=config.liveness_endpoint,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        stop_flag=stop,
    )
    if runtime.exit_code:
        # The Lease was lost: exit non-zero, and the kubelet restarts this replica as a
        # candidate (client-go's leaders do the same).
        sys.exit(runtime.exit_code)


if __name__ == "__main__":
    main()
