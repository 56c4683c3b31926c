"""What the operator relies on in Kopf, read from the pinned Kopf itself, and its settings.

The design (see handlers and controller) relies on five things of Kopf 1.45.2. If an upgrade
changes any of them, a test here fails and the design must be re-checked before the pin moves:

1. ``settings.watching.label_selectors`` exists and Kopf sends it as ``labelSelector`` on both
   the initial list and the watch, so the API server filters Jobs, Pods and CronJobs;
2. ``on.event`` and ``index`` handlers need no finalizer: only spawning (daemons, timers) and
   changing (create/update/delete/resume) handlers make Kopf add one;
3. every index of every resource is filled from its initial listing before any ``on.event``
   handler runs (so a reconcile never sees a half-filled cache, and never prunes countedJobs
   from one);
4. a DELETED event removes the object from the indexes and is still passed, with the object's
   last state, to ``on.event`` handlers (the tombstones);
5. Kopf writes to an object only through a patch it accumulates (``application.apply``), which
   our handlers never touch.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import kopf
from kopf._cogs.clients import fetching, watching
from kopf._core.engines import indexing
from kopf._core.reactor import processing

from crontask_operator import config as cfg
from crontask_operator import handlers, names

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def test_the_kopf_this_was_checked_against_is_the_pinned_one() -> None:
    pinned = re.search(r"^kopf==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    assert pinned is not None
    assert importlib.metadata.version("kopf") == pinned.group(1) == "1.45.2", (
        "a new Kopf: re-read the five points of this module's docstring against it, then"
        " update the version here")


def test_1_label_selectors_reach_list_and_watch_requests() -> None:
    settings = cfg.kopf_settings(cfg.from_args([]))
    for group, plural in (("batch", "jobs"), ("batch", "cronjobs"), ("", "pods")):
        resource = kopf.Resource(group, "v1", plural)
        assert settings.watching.label_selectors.collect(resource) == [names.LABEL_CRONTASK]
    crontasks = kopf.Resource(names.GROUP, names.VERSION, names.PLURAL)
    assert settings.watching.label_selectors.collect(crontasks) == []
    for module in (fetching, watching):
        source = inspect.getsource(module)
        assert "settings.watching.label_selectors.collect(resource)" in source
        assert "params['labelSelector'] = label_selector" in source


def test_2_event_and_index_handlers_need_no_finalizer() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, cfg.OperatorConfig())
    assert registry._spawning.get_all_handlers() == []
    assert registry._changing.get_all_handlers() == []
    assert len(registry._watching.get_all_handlers()) == 4
    assert len(registry._indexing.get_all_handlers()) == 6
    source = inspect.getsource(processing.process_resource_causes)
    assert "registry._spawning.requires_finalizer" in source
    assert "registry._changing.requires_finalizer" in source
    assert "_watching.requires_finalizer" not in source


def test_3_indexes_are_complete_before_event_handlers_run() -> None:
    source = inspect.getsource(processing.process_resource_event)
    indexed = source.index("await indexing.index_resource(")
    waited = source.index("await operator_indexed.wait_for(True)")
    handled = source.index("await process_resource_causes(")
    assert indexed < waited < handled


def test_4_deleted_objects_leave_the_indexes_and_still_reach_event_handlers() -> None:
    source = inspect.getsource(indexing.index_resource)
    assert "raw_event['type'] == 'DELETED'" in source
    assert "indexers.discard(body=body)" in source
    watching_source = inspect.getsource(processing.process_resource_causes)
    assert "process_watching_cause(" in watching_source


def test_5_kopf_writes_only_the_patch_it_accumulated() -> None:
    source = inspect.getsource(processing.process_resource_event)
    assert "application.apply(" in source
    assert "patch=patch" in source


def test_settings_use_our_names_and_post_no_events_of_kopfs_own() -> None:
    settings = cfg.kopf_settings(cfg.from_args([]))
    assert settings.persistence.finalizer == "crontask.dev/kopf-finalizer"
    assert settings.persistence.finalizer != names.LEGACY_FINALIZER
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "crontask.dev"
    assert settings.persistence.diffbase_storage.prefix == "crontask.dev"  # type: ignore[attr-defined]
    assert settings.posting.enabled is False
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.peering.standalone
    peered = cfg.kopf_settings(cfg.from_args(["--peering", "crontask", "--namespaces", "a,b"]))
    assert peered.peering.name == "crontask"
    assert not peered.peering.standalone
    assert not peered.peering.clusterwide
    assert settings.scanning.disabled, "no CRD/namespace watching needed for exact namespaces"
    globbed = cfg.kopf_settings(cfg.from_args(["--namespaces", "team-*"]))
    assert not globbed.scanning.disabled, "globs need Kopf's namespace scanning"
