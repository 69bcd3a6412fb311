"""Backend names, what records carry for them, and Flannel's VXLAN defaults.

Shared by the configuration model, the datastores and the agent, and free of
dependencies: the agent must not load pydantic (~9 MB resident on every node) for three
constants.
"""

#: The backends plainnet runs.
BACKENDS = ("host-gw", "vxlan", "auto")

#: What each backend puts on the wire as a record's backend type. ``auto`` nodes are
#: VXLAN nodes that route on-link peers directly — Flannel's vxlan backend with
#: ``DirectRouting`` — so they publish ``vxlan`` and interoperate with vxlan nodes.
RECORD_TYPES = {"host-gw": "host-gw", "vxlan": "vxlan", "auto": "vxlan"}

#: Flannel's defaults for its vxlan backend (the Linux default port 8472, VNI 1).
DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472
MAX_VNI = 2**24 - 1
