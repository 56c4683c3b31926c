"""``crontask-operator``: parse the flags, set up logs and metrics, run Kopf with our settings.

``python -m crontask_operator`` does the same.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
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
    handlers.register(registry, config, metrics)
    logging.getLogger(__name__).info(
        "starting crontask-operator",
        extra={"namespaces": list(config.namespaces) or "*", "peering": config.peering,
               "job_image": config.job_defaults.image})
    kopf.run(
        registry=registry,
        settings=cfg.kopf_settings(config),
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
        liveness_endpoint=config.liveness_endpoint,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
    )


if __name__ == "__main__":
    main()
