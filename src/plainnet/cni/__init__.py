"""The CNI plugin: kubenet's pod plumbing (bridge cbr0, veth, address, routes,
masquerade) as a CNI 1.0/1.1 plugin.

Two halves: ``shim.c``, a tiny executable the container runtime runs per command,
and :mod:`plainnet.cni.server`, which answers it inside the node agent. Decisions
(:mod:`~plainnet.cni.config`, :mod:`~plainnet.cni.handler`) are separate from effects
(:mod:`~plainnet.cni.dataplane`, :mod:`~plainnet.cni.masquerade`).
"""
