"""The test control plane itself answers every request: the kube-apiserver built with
the vendored reflect2 v1.0.1 panicked (the client saw a reset connection) on creates, a
node list and SelfSubjectRulesReview once it had answered a client with curl's
User-Agent; the Python client alone rarely triggered it, which hid it."""

import pytest

pytestmark = [pytest.mark.root, pytest.mark.kube]

CURL = "curl/7.88.1"
REVIEW = {
    "apiVersion": "authorization.k8s.io/v1",
    "kind": "SelfSubjectRulesReview",
    "spec": {"namespace": "default"},
}


def test_curl_style_requests_are_answered(kube):
    for _ in range(3):
        status, _ = kube.request("GET", "/api/v1/nodes/no-such-node", user_agent=CURL)
        assert status == 404
        status, reply = kube.request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            REVIEW,
            user_agent=CURL,
        )
        assert status == 201, reply
        assert reply["status"]["resourceRules"], reply
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "curl-node"}}
        assert kube.request("POST", "/api/v1/nodes", node)[0] in (201, 409)
        status, nodes = kube.request("GET", "/api/v1/nodes")
        assert status == 200 and nodes["items"]
    assert "panic" not in kube.log().lower()
