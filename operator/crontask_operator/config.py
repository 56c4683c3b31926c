"""The operator's settings: command-line flags (each also an environment variable) and the
Kopf settings they turn into.

Every flag ``--some-flag`` can be given as ``CRONTASK_OPERATOR_SOME_FLAG`` so that the Helm chart
and a developer's shell configure it the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import kopf

from crontask_operator import names
from crontask_operator.cronjob import JobDefaults
from crontask_operator.images import AllowList, ImageError

ENV_PREFIX = "CRONTASK_OPERATOR_"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (globs allowed); empty: the whole cluster."""
    job_defaults: JobDefaults = field(default_factory=JobDefaults)
    allowed_images: AllowList = field(
        default_factory=lambda: AllowList.parse((), names.DEFAULT_IMAGE))
    """The images a CronTask's spec.image may name (the default job image always may)."""
    resync_interval: float = 15.0
    """How often each CronTask is re-checked (drift repair, finished runs, next slot)."""
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    metrics_port: int | None = 8080
    log_format: str = "json"
    log_level: str = "INFO"
    peering: str | None = None
    """Kopf peering object name; None runs standalone (one replica with Recreate)."""
    priority: int = 0
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _pairs(text: str) -> dict[str, str]:
    """``cpu=50m,memory=128Mi`` as a mapping (empty string: empty mapping)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"expected name=quantity, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crontask-operator",
        description="Reconcile CronTask resources into CronJobs and report each run's outcome.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG>, e.g."
               f" {ENV_PREFIX}NAMESPACES=ns1,ns2.")
    defaults = OperatorConfig()
    p.add_argument("--namespaces", default=_env("namespaces", ""),
                   help="comma-separated namespaces (globs allowed) to watch; empty: all")
    p.add_argument("--job-image", default=_env("job_image", defaults.job_defaults.image),
                   help="the jobs image when a CronTask names none")
    p.add_argument("--allowed-images", default=_env("allowed_images", ""),
                   help="comma-separated image patterns a CronTask's spec.image may name"
                        " (repositories or globs: registry.example/team/*, repo:1.*,"
                        " repo@sha256:...); empty: the repository of --job-image;"
                        " '**' allows any image")
    p.add_argument("--job-image-pull-policy",
                   default=_env("job_image_pull_policy", defaults.job_defaults.image_pull_policy),
                   choices=["Always", "IfNotPresent", "Never"])
    p.add_argument("--job-requests", type=_pairs,
                   default=_env("job_requests", "cpu=50m,memory=128Mi"),
                   help="default resource requests of job pods, e.g. cpu=50m,memory=128Mi")
    p.add_argument("--job-limits", type=_pairs, default=_env("job_limits", "memory=256Mi"),
                   help="default resource limits of job pods, e.g. memory=256Mi")
    p.add_argument("--resync-interval", type=float,
                   default=float(_env("resync_interval", "15") or 15),
                   help="seconds between re-checks of each CronTask")
    p.add_argument("--liveness", default=_env("liveness", defaults.liveness_endpoint),
                   help="Kopf's liveness endpoint URL (empty: none)")
    p.add_argument("--metrics-port", type=int,
                   default=int(_env("metrics_port", str(defaults.metrics_port)) or 0),
                   help="port of the Prometheus /metrics endpoint (0: none)")
    p.add_argument("--log-format", choices=["json", "text"],
                   default=_env("log_format", defaults.log_format))
    p.add_argument("--log-level", default=_env("log_level", defaults.log_level),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--peering", default=_env("peering", ""),
                   help="Kopf peering name for several replicas (needs the KopfPeering CRD);"
                        " empty: standalone, for one replica with a Recreate strategy")
    p.add_argument("--priority", type=int, default=int(_env("priority", "0") or 0),
                   help="peering priority: the highest-priority replica acts, others pause")
    return p


def from_args(argv: Sequence[str] | None = None) -> OperatorConfig:
    args = parser().parse_args(argv)
    requests = args.job_requests if isinstance(args.job_requests, Mapping) \
        else _pairs(args.job_requests)
    limits = args.job_limits if isinstance(args.job_limits, Mapping) else _pairs(args.job_limits)
    try:
        allowed = AllowList.parse(args.allowed_images, default_image=args.job_image)
    except ImageError as exc:
        parser().error(f"--allowed-images/--job-image: {exc}")
    return OperatorConfig(
        namespaces=tuple(n.strip() for n in args.namespaces.split(",") if n.strip()),
        job_defaults=JobDefaults(image=args.job_image,
                                 image_pull_policy=args.job_image_pull_policy,
                                 requests=requests, limits=limits),
        allowed_images=allowed,
        resync_interval=args.resync_interval,
        liveness_endpoint=args.liveness or None,
        metrics_port=args.metrics_port or None,
        log_format=args.log_format,
        log_level=args.log_level,
        peering=args.peering or None,
        priority=args.priority,
    )


def _is_pattern(namespace: str) -> bool:
    return any(c in namespace for c in "*?[!,")


def kopf_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """Kopf settings with our own names everywhere Kopf would otherwise use its own.

    - finalizer and progress/diff-base annotations under ``crontask.dev`` (not
      kopf.zalando.org), and progress kept in annotations only: Kopf's default also writes
      ``status.kopf``, which our schema does not declare, so the server would prune it and
      Kopf would loop;
    - watch timeouts, so a silently dead watch connection is noticed and re-established;
    - no cluster-wide scanning of CRDs and namespaces unless namespace globs need it;
    - peering per the flags.
    """
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = names.MANAGED_BY
    settings.posting.event_name_prefix = "crontask-"
    settings.execution.max_workers = 4
    # The CRD is installed before the operator (the chart's crds/): no need to watch all CRDs
    # cluster-wide for new resources, and so no RBAC for it. Namespace patterns (globs) are the
    # exception: Kopf needs its scanning to find the namespaces that match them.
    settings.scanning.disabled = not any(_is_pattern(ns) for ns in config.namespaces)
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.priority = config.priority
        settings.peering.mandatory = True
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True
    settings.peering.clusterwide = not config.namespaces
    return settings
