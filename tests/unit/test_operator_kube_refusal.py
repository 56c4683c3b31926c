"""Which API errors on a create or apply are refusals (suspend, never retried) and which are
retried: a 403 that only says the API server has not discovered the CronTask kind yet (seen
right after a kube-apiserver restart in the chaos tier) must be retried."""

from __future__ import annotations

import json

from kubernetes_asyncio.client.exceptions import ApiException

from crontask_operator.kube import NamespaceTerminating, Rejected, _refusal


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden" if status == 403 else "Invalid")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


def test_a_restmapping_gap_after_an_apiserver_restart_is_retried() -> None:
    exc = api_error(403, 'cronjobs.batch "ct-013" is forbidden: cannot set blockOwnerDeletion in'
                         " this case because cannot find RESTMapping for APIVersion"
                         " crontask.dev/v1alpha1 Kind CronTask: no matches for kind \"CronTask\"")
    assert _refusal(exc) is exc


def test_a_policy_403_and_an_invalid_object_are_refusals() -> None:
    forbidden = _refusal(api_error(403, 'cronjobs.batch "x" is forbidden: violates PodSecurity'))
    invalid = _refusal(api_error(422, 'CronJob.batch "x" is invalid: spec.schedule'))
    assert isinstance(forbidden, Rejected) and forbidden.status == 403
    assert isinstance(invalid, Rejected) and invalid.status == 422


def test_a_terminating_namespace_is_its_own_case() -> None:
    exc = api_error(403, "unable to create new content in namespace shop because it is being"
                         " terminated (NamespaceTerminating)")
    assert isinstance(_refusal(exc), NamespaceTerminating)


def test_other_errors_pass_through() -> None:
    exc = api_error(500, "etcdserver: request timed out")
    assert _refusal(exc) is exc
