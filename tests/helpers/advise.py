"""``plainnet advise --kubeconfig`` run the way an operator runs it: on a node (a lab
node's namespace), against the lab's real API server."""

import json
import sys


def advise_on(cluster, node: str, *options: str) -> dict:
    kubeconfig = cluster.kube.kubeconfig("admin")
    result = cluster.lab.run(
        node,
        [sys.executable, "-m", "plainnet.cli.main", "advise", "--kubeconfig", str(kubeconfig),
         "--json", *options],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
