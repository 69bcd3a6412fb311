"""NetworkPolicy as an add-on: Kubernetes ``networking.k8s.io/v1`` NetworkPolicy
enforced on each node with one nftables table, on top of any routing backend.

- :mod:`.model` — policies, pods and namespaces as plain values, parsed from API
  objects (hostile until parsed: a broken piece allows nothing, it never widens);
- :mod:`.selectors` — label selectors;
- :mod:`.evaluator` — the reference: is a connection from A to B on a port allowed?
  Written from the API documentation alone; the tests' oracle;
- :mod:`.compiler` — (policies, pods, namespaces, this node) -> the complete ruleset
  of the table ``inet plainnet-policy``. Pure;
- :mod:`.nft` — applies a ruleset as one atomic transaction and reads its counters.
"""
