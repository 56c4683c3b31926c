"""The operator's settings: command-line flags (each also an environment variable) and the
Kopf settings they turn into.

Every flag ``--some-flag`` can be given as ``CRONTASK_OPERATOR_SOME_FLAG`` so that the Helm chart
and a developer's shell configure it the same way.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from crontask_operator import defaults, names, quantities
from crontask_operator.cronjob import JobDefaults
from crontask_operator.images import AllowList, ImageError

ENV_PREFIX = "CRONTASK_OPERATOR_"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (globs allowed); empty: the whole cluster."""
    job_defaults: JobDefaults = field(default_factory=JobDefaults)
    allowed_images: AllowList = field(
        default_factory=lambda: AllowList.parse((), defaults.JOB_IMAGE))
    """The images a CronTask's spec.image may name (the default job image always may)."""
    resync_interval: float = defaults.RESYNC_SECONDS
    """The safety resync of each CronTask; events do the real work."""
    resync_jitter: float = defaults.RESYNC_JITTER
    workers: int = defaults.WORKERS
    liveness_endpoint: str | None = f"http://0.0.0.0:{defaults.HEALTH_PORT}/healthz"
    metrics_port: int | None = defaults.METRICS_PORT
    log_format: str = defaults.LOG_FORMAT
    log_level: str = defaults.LOG_LEVEL
    peering: str | None = None
    """Kopf peering object name; None runs standalone (one replica with Recreate)."""
    priority: int = 0
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _pairs(text: str) -> dict[str, str]:
    """``cpu=50m,memory=128Mi`` as a mapping (empty string: empty mapping); each quantity in
    the API server's own spelling, so that a default never looks like drift."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        parsed = quantities.parse(value.strip())
        if not sep or not key or parsed is None or not 0 <= parsed.value <= quantities.MAX_VALUE:
            raise argparse.ArgumentTypeError(f"expected name=quantity, got {item!r}")
        out[key.strip()] = parsed.in_resource_list().text
    return out


def _pairs_text(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crontask-operator",
        description="Reconcile CronTask resources into CronJobs and report each run's outcome.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG>, e.g."
               f" {ENV_PREFIX}NAMESPACES=ns1,ns2.")
    base = OperatorConfig()
    p.add_argument("--namespaces", default=_env("namespaces", ""),
                   help="comma-separated namespaces (globs allowed) to watch; empty: all")
    p.add_argument("--job-image", default=_env("job_image", base.job_defaults.image),
                   help="the jobs image when a CronTask names none")
    p.add_argument("--allowed-images", default=_env("allowed_images", ""),
                   help="comma-separated image patterns a CronTask's spec.image may name"
                        " (repositories or globs: registry.example/team/*, repo:1.*,"
                        " repo@sha256:...); empty: the repository of --job-image;"
                        " '**' allows any image")
    p.add_argument("--job-image-pull-policy",
                   default=_env("job_image_pull_policy", base.job_defaults.image_pull_policy),
                   choices=["Always", "IfNotPresent", "Never"])
    p.add_argument("--job-requests", type=_pairs,
                   default=_env("job_requests", _pairs_text(defaults.JOB_REQUESTS)),
                   help="default resource requests of job pods, e.g. cpu=50m,memory=128Mi")
    p.add_argument("--job-limits", type=_pairs,
                   default=_env("job_limits", _pairs_text(defaults.JOB_LIMITS)),
                   help="default resource limits of job pods, e.g. memory=256Mi")
    p.add_argument("--resync-interval", type=_positive(float),
                   default=_env("resync_interval", str(defaults.RESYNC_SECONDS)),
                   help="seconds between safety resyncs of each CronTask (jittered by"
                        f" ±{defaults.RESYNC_JITTER:.0%}); events do the real work")
    p.add_argument("--workers", type=_positive(int),
                   default=_env("workers", str(defaults.WORKERS)),
                   help="CronTasks reconciled at once")
    p.add_argument("--liveness", default=_env("liveness", base.liveness_endpoint),
                   help="Kopf's liveness endpoint URL (empty: none)")
    p.add_argument("--metrics-port", type=int,
                   default=int(_env("metrics_port", str(base.metrics_port)) or 0),
                   help="port of the Prometheus /metrics endpoint (0: none)")
    p.add_argument("--log-format", choices=["json", "text"],
                   default=_env("log_format", base.log_format))
    p.add_argument("--log-level", default=_env("log_level", base.log_level),
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
        resync_interval=float(args.resync_interval),
        workers=int(args.workers),
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

    - server-side label selectors on the CronJob, Job and Pod watches: the API server sends
      only the operator's own objects (``settings.watching.label_selectors``);
    - Kopf's finalizer and annotations under ``crontask.dev`` (not kopf.zalando.org). Kopf
      writes neither: the handlers need no finalizer and track no changes. The finalizer name
      is not the one older operators used, so Kopf never tries to patch a CronTask to remove
      that one (the chart README says how to, once, by hand);
    - Kopf posts no Events of its own (the operator posts its own, on CronTasks);
    - watch timeouts, so a silently dead watch connection is noticed and re-established;
    - no cluster-wide scanning of CRDs and namespaces unless namespace globs need it;
    - peering per the flags.
    """
    settings = kopf.OperatorSettings()
    for resource in (("batch", "v1", "cronjobs"), ("batch", "v1", "jobs"), ("", "v1", "pods")):
        settings.watching.label_selectors[resource] = names.LABEL_CRONTASK
    settings.persistence.finalizer = names.KOPF_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.enabled = False
    settings.posting.reporting_component = names.MANAGED_BY
    settings.execution.max_workers = 2
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
