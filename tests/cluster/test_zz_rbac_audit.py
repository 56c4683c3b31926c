"""RBAC is exactly what the operator uses (issue 8.7), derived from the API server's audit log.

Runs last in the cluster tier (file name), after every other test made the operator do
everything it can do: create, repair, suspend and delete CronJobs, fold runs, post events. Each
request the operator's ServiceAccount made is turned into the RBAC rule it needed; the chart's
rules must equal that set: a missing rule fails (and so would the request have, 403), an unused
one fails too. Two rules are implied rather than seen as a verb of their own, each by a real
request in the log:

- a server-side apply that created its object (201) needed ``create`` as well as ``patch``;
- a CronJob written with an owner reference ``blockOwnerDeletion: true`` to a CronTask needs
  ``update`` on ``crontasks/finalizers`` (OwnerReferencesPermissionEnforcement, which the local
  and kind backends enable).

It also checks that the operator's lists and watches of Jobs, Pods and CronJobs carried the
server-side label selector: objects that are not the operator's are never sent to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.cluster.conftest import LEASE, OPERATOR_USER, Operator, chart_cluster_role

Rule = tuple[str, str, str]
"""(API group, resource[/subresource], verb)."""


def audit_events() -> list[dict[str, Any]]:
    path = os.environ.get("CRONTASK_AUDIT_LOG")
    if not path or not Path(path).exists():
        pytest.skip("no API server audit log here (CRONTASK_AUDIT_LOG: the local and kind"
                    " backends write one)")
    events = []
    for file in sorted(Path(path).parent.glob(Path(path).name + "*")):
        for line in file.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (event.get("user") or {}).get("username") == OPERATOR_USER:
                events.append(event)
    return events


def owner_is_blocking_crontask(event: dict[str, Any]) -> bool:
    body = event.get("requestObject") or {}
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == "CronTask" and r.get("blockOwnerDeletion") for r in refs)


def used_rules(events: list[dict[str, Any]]) -> tuple[set[Rule], list[str]]:
    rules: set[Rule] = set()
    denied: list[str] = []
    for event in events:
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/api, /apis): granted to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group, verb = ref.get("apiGroup", ""), event["verb"]
        code = (event.get("responseStatus") or {}).get("code", 0)
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        if decision != "allow":
            # a 403 from admission (e.g. a namespace being deleted) is not an RBAC refusal
            denied.append(f"{verb} {group}/{resource}: {event.get('requestURI')}")
            continue
        rules.add((group, resource, verb))
        if verb == "patch" and code == 201:
            rules.add((group, resource, "create"))
        if resource == "cronjobs" and verb in ("create", "patch", "update") \
                and owner_is_blocking_crontask(event):
            rules.add(("crontask.dev", "crontasks/finalizers", "update"))
    return rules, denied


def granted_rules() -> set[Rule]:
    """The chart's ClusterRole and its leader-election Role (the Lease: resourceNames narrow
    get and update to the one Lease; the audit log shows which Lease was used)."""
    docs = [d for d in yaml.safe_load_all(chart_cluster_role()) if d]
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    assert [d["kind"] for d in roles] == ["ClusterRole", "Role"]
    return {(group, resource, verb) for role in roles for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_rbac_is_exactly_what_the_operator_used(operator: Operator) -> None:
    events = audit_events()
    assert events, f"no request by {OPERATOR_USER} in the audit log"
    used, denied = used_rules(events)
    assert denied == [], "requests the chart's RBAC refused"
    granted = granted_rules()
    assert used - granted == set(), "used but not granted"
    assert granted - used == set(), "granted but never used"
    leases = {(e.get("objectRef") or {}).get("name") for e in events
              if (e.get("objectRef") or {}).get("resource") == "leases"} - {None}
    assert leases == {LEASE}, "the one Lease the Role names"


def test_only_our_objects_are_streamed(operator: Operator) -> None:
    events = audit_events()
    streams = [e for e in events if e["verb"] in ("list", "watch")
               and (e.get("objectRef") or {}).get("resource") in ("jobs", "pods", "cronjobs")]
    assert streams, "the operator listed and watched Jobs, Pods and CronJobs"
    for event in streams:
        query = parse_qs(urlparse(event["requestURI"]).query)
        assert query.get("labelSelector") == ["crontask.dev/crontask"], event["requestURI"]
