"""The node agent: converge this node's kernel state to what the peer records say.

Pure decisions:

- :mod:`~plainnet.agent.validation`: which peer records may be acted on.
- :mod:`~plainnet.agent.backends`: one folder per routing mechanism behind one
  interface — record type and data, peer checks, the kernel state a peer needs,
  devices, pod MTU.
- :mod:`~plainnet.agent.peer_view`: all records validated, the desired state kept up to
  date cheaply.
- :mod:`~plainnet.agent.kernel_model` and :mod:`~plainnet.agent.plan`: the kernel state
  as values, and the one plan from desired to held.

The loop, split by concern:

- :mod:`~plainnet.agent.startup`: settings and datastore in, this node's context out.
- :mod:`~plainnet.agent.observation`: list and watch the records.
- :mod:`~plainnet.agent.reconciler`: one pass at a time; owns the kernel snapshot.
- :mod:`~plainnet.agent.reactor`: signals, tasks, retries, shutdown.

Effects: :mod:`~plainnet.agent.kernel` and :mod:`~plainnet.agent.netlink` (reading and
changing the kernel), :mod:`~plainnet.agent.metrics` (Prometheus, ``/healthz``).
"""

#: The route protocol number plainnet marks its routes and nexthops with
#: (``ip route show proto 158``). Not used by the kernel (0-4), by routing daemons
#: listed in iproute2's rt_protos (bird 12, zebra 11, babel 42, openr 99, ...), by
#: FRR (186-198) or by Calico's Felix (80), so "proto 158" means "plainnet created it".
ROUTE_PROTOCOL = 158
