"""Where the facts "node N owns subnet S, reachable at address A" live.

The agent talks to one interface, :class:`~plainnet.datastore.records.Datastore`, and
never looks behind it. Implementations: :mod:`plainnet.datastore.etcd` (Flannel's etcd
lease format, on the wire); Kubernetes Node objects follow in their own module.
"""
