"""The node agent: converge this node's kernel routes to what the peer records say.

- :mod:`~plainnet.agent.validation` (pure): which peer records may be acted on.
- :mod:`~plainnet.agent.backends` (pure): desired kernel state per backend (host-gw).
- :mod:`~plainnet.agent.reconcile` (pure): the difference between desired and kernel.
- :mod:`~plainnet.agent.kernel` and :mod:`~plainnet.agent.netlink`: reading and
  changing the kernel.
- :mod:`~plainnet.agent.agent`: the asyncio loop tying datastore, kernel and metrics.
"""

#: The route protocol number plainnet marks its routes and nexthops with
#: (``ip route show proto 158``). Not used by the kernel (0-4), by routing daemons
#: listed in iproute2's rt_protos (bird 12, zebra 11, babel 42, openr 99, ...), by
#: FRR (186-198) or by Calico's Felix (80), so "proto 158" means "plainnet created it".
ROUTE_PROTOCOL = 158
