"""Which kernel notifications cost a pass: pod churn must not (every pod's veth, its
link-local address and route, a bridge port going up), the underlay, the overlay
device, plainnet's own routes and foreign routes into the cluster must."""

from ipaddress import ip_network

from plainnet.agent import netlink as nl

PROTOCOL = 158
WATCHED = nl.EventFilter(
    links=frozenset({2, 9}), cluster=(ip_network("10.244.0.0/16"),), entry_devices=frozenset({9})
)


def message(kind: int, body: bytes) -> bytes:
    return nl.NLMSGHDR.pack(nl.NLMSGHDR.size + len(body), kind, 0, 0, 0) + body


def link(kind: int, ifindex: int) -> bytes:
    return message(kind, nl.IFINFOMSG.pack(0, 1, ifindex, 0, 0))


def address(kind: int, ifindex: int, scope: int) -> bytes:
    return message(kind, nl.IFADDRMSG.pack(10, 64, 0, scope, ifindex))


def route(kind: int, destination: str, protocol: int) -> bytes:
    return message(kind, nl.route_body(ip_network(destination), protocol, 7))


def relevant(*messages: bytes) -> bool:
    return nl.event_needs_reconcile(b"".join(messages), PROTOCOL, WATCHED)


def test_pod_churn_costs_no_pass():
    new_veth = 57
    assert not relevant(
        link(nl.RTM_NEWLINK, new_veth),
        address(nl.RTM_NEWADDR, new_veth, 253),  # its fe80:: address (scope link)
        route(nl.RTM_NEWROUTE, "fe80::/64", 2),  # and the kernel's route for it
        link(nl.RTM_DELLINK, new_veth),
    )


def test_the_underlay_and_the_overlay_device_do():
    assert relevant(link(nl.RTM_NEWLINK, 2))  # the uplink went down or up
    assert relevant(link(nl.RTM_DELLINK, 9))  # the VXLAN device was deleted
    assert relevant(address(nl.RTM_DELADDR, 3, 0))  # a global address: networks change


def test_own_removals_and_foreign_routes_into_the_cluster_do():
    assert relevant(route(nl.RTM_DELROUTE, "10.244.5.0/24", PROTOCOL))
    assert not relevant(route(nl.RTM_NEWROUTE, "10.244.5.0/24", PROTOCOL))  # our own
    assert relevant(route(nl.RTM_NEWROUTE, "10.244.5.0/24", 4))  # someone else's
    assert not relevant(route(nl.RTM_NEWROUTE, "192.168.7.0/24", 4))  # not pod space
    entry = nl.NDMSG.pack(7, 9, nl.NUD_PERMANENT, nl.NTF_SELF, 0)
    assert relevant(message(nl.RTM_DELNEIGH, entry))
    other = nl.NDMSG.pack(7, 57, nl.NUD_PERMANENT, nl.NTF_SELF, 0)
    assert not relevant(message(nl.RTM_DELNEIGH, other))
