"""CNI commands: ADD, DEL, CHECK, STATUS, GC, VERSION.

The node's facts (pod subnets, cluster CIDRs, MTU) come from the agent, handed over in
memory (``node_state``; the agent also writes them to ``subnet.json`` for restarts);
pod addresses from the IPAM file store (one per node subnet), so they survive a crash
of the agent and concurrent ADDs never share one. The kernel is reached only through
a :class:`~plainnet.cni.dataplane.PodDataplane`.

An ADD that fails after taking addresses gives them back and removes what it made; a
DEL never fails for something already gone (no container, no namespace, no address).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from plainnet.cni.config import CniRequest, parse_request
from plainnet.cni.dataplane import (
    DataplaneError,
    ForeignDeviceError,
    PodDataplane,
    host_veth_name,
    veth_alias,
)
from plainnet.cni.errors import (
    CHECK_FAILED,
    INVALID_NETWORK_CONFIG,
    PLUGIN_NOT_AVAILABLE,
    SETUP_FAILED,
    TRY_AGAIN_LATER,
    CniError,
)
from plainnet.cni.protocol import LATEST_VERSION, version_answer
from plainnet.ipam.errors import IpamError
from plainnet.ipam.file_store import FilePodAddressStore, store_directory
from plainnet.ipam.pod_addresses import Owner, PodAddressAllocator, Reservation, first_usable
from plainnet.ipam.types import IPNetwork
from plainnet.node_state import NodeState, read_node_state
from plainnet.text import printable

log = logging.getLogger("plainnet.cni")


class CniHandler:
    def __init__(
        self,
        run_dir: Path,
        node_state: Callable[[], NodeState | None],
        dataplane: PodDataplane,
        ipam_dir: Path | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.node_state = node_state
        self.dataplane = dataplane
        self.ipam_dir = ipam_dir or run_dir / "ipam"
        self._masqueraded: tuple[str, ...] | None = None
        self._masquerade_lock = threading.Lock()

    # --- entry point --------------------------------------------------------------------

    def handle(self, env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
        """Exit code and stdout of one plugin invocation."""
        version = LATEST_VERSION
        try:
            if env.get("CNI_COMMAND") == "VERSION":
                return 0, self.version()
            request = parse_request(env, stdin)
            version = request.config.cni_version
            command = {
                "ADD": self.add,
                "DEL": self.delete,
                "CHECK": self.check,
                "STATUS": self.status,
                "GC": self.gc,
            }[request.command]
            return 0, command(request)
        except CniError as error:
            log.warning(
                "CNI %s %s: %s %s",
                printable(env.get("CNI_COMMAND", ""), 20),
                printable(env.get("CNI_CONTAINERID", ""), 80),
                printable(error.msg),
                printable(error.details),
            )
            return 1, error.to_json(version)
        except Exception as exc:
            log.exception("CNI %s failed", printable(env.get("CNI_COMMAND", ""), 20))
            return 1, CniError(SETUP_FAILED, "plainnet failed", str(exc)).to_json(version)

    def version(self) -> bytes:
        return version_answer().encode() + b"\n"

    # --- commands ------------------------------------------------------------------------

    def add(self, request: CniRequest) -> bytes:
        node = self._node()
        config = request.config
        mtu = config.mtu or node.mtu
        pools = self._pools(node)
        gateways = [ip_interface(f"{first_usable(p.subnet)}/{p.subnet.prefixlen}") for p in pools]
        dataplane = self.dataplane
        try:
            # First: a bridge name that is another device's is refused before any change.
            bridge_index, bridge_mac = dataplane.ensure_bridge(config.bridge, gateways, mtu)
        except ForeignDeviceError as exc:
            raise CniError(INVALID_NETWORK_CONFIG, str(exc)) from None
        except (DataplaneError, OSError) as exc:
            raise CniError(
                SETUP_FAILED, f"could not set up bridge {config.bridge}", str(exc)
            ) from None
        addresses = []
        try:
            for pool in pools:
                address = pool.allocate(request.container_id, request.ifname, config.name)
                addresses.append(ip_interface(f"{address}/{pool.subnet.prefixlen}"))
        except IpamError as exc:
            self._release(pools, request)
            raise CniError(TRY_AGAIN_LATER, str(exc)) from None
        host_name = host_veth_name(request.container_id, request.ifname)
        try:
            if config.masquerade:
                self._ensure_masquerade(node)
            link = dataplane.attach_pod(
                bridge_index,
                mtu,
                request.netns,
                request.ifname,
                host_name,
                addresses,
                [g.ip for g in gateways],
                config.hairpin,
                config.name,
            )
        except (DataplaneError, OSError) as exc:
            self._release(pools, request)
            try:
                dataplane.remove_host_veth(host_name)
            except DataplaneError as cleanup:
                log.warning("could not remove %s after a failed ADD: %s", host_name, cleanup)
            raise CniError(
                SETUP_FAILED,
                f"could not set up {request.ifname} in {printable(request.netns, 80)}",
                str(exc),
            ) from None
        log.info(
            "ADD %s %s: %s",
            request.container_id[:12],
            request.ifname,
            ", ".join(map(str, addresses)),
        )
        # After an earlier plugin of the chain, extend its result rather than drop it.
        prev = config.prev_result or {}
        interfaces = list(prev.get("interfaces", []))
        pod_index = len(interfaces) + 2
        result = {
            "cniVersion": config.cni_version,
            "interfaces": [
                *interfaces,
                {"name": config.bridge, "mac": bridge_mac},
                {"name": host_name, "mac": link.host_mac},
                {"name": request.ifname, "mac": link.pod_mac, "sandbox": request.netns},
            ],
            "ips": [
                *prev.get("ips", []),
                *(
                    {"address": str(a), "gateway": str(g.ip), "interface": pod_index}
                    for a, g in zip(addresses, gateways, strict=True)
                ),
            ],
            "routes": [
                *prev.get("routes", []),
                *(
                    {"dst": "0.0.0.0/0" if g.version == 4 else "::/0", "gw": str(g.ip)}
                    for g in gateways
                ),
            ],
            "dns": prev.get("dns", {}),
        }
        return json.dumps(result).encode() + b"\n"

    def delete(self, request: CniRequest) -> bytes:
        node = self._last_known_node()
        if node is not None:
            released = self._release(self._pools(node) + self._lost_pools(node), request)
            if released:
                log.info(
                    "DEL %s %s: released %s",
                    request.container_id[:12],
                    request.ifname,
                    ", ".join(map(str, released)),
                )
        self.dataplane.remove_host_veth(host_veth_name(request.container_id, request.ifname))
        return b""

    def check(self, request: CniRequest) -> bytes:
        node = self._node()
        held = []
        for pool in self._pools(node):
            for reservation in pool.reservations():
                if reservation.owner == Owner(request.container_id, request.ifname):
                    held.append(ip_interface(f"{reservation.address}/{pool.subnet.prefixlen}"))
        if not held:
            owner = Owner(request.container_id, request.ifname)
            for pool in self._lost_pools(node):
                if any(r.owner == owner for r in pool.reservations()):
                    raise CniError(
                        CHECK_FAILED,
                        f"{request.container_id} {request.ifname} has an address from "
                        f"{pool.subnet}, a subnet this node lost to another node",
                        "recreate the pod",
                    )
            raise CniError(
                CHECK_FAILED, f"no address is reserved for {request.container_id} {request.ifname}"
            )
        expected = self._prev_addresses(request) or held
        gateways = [first_usable(subnet) for subnet in node.subnets]
        problems = self.dataplane.check_pod(
            request.netns,
            request.ifname,
            host_veth_name(request.container_id, request.ifname),
            request.config.bridge,
            expected,
            gateways,
        )
        if set(expected) != set(held):
            problems.append(
                f"prevResult addresses {sorted(map(str, expected))} differ from the "
                f"reserved {sorted(map(str, held))}"
            )
        if problems:
            raise CniError(CHECK_FAILED, "; ".join(problems))
        return b""

    def status(self, request: CniRequest) -> bytes:
        if self.node_state() is None:
            raise CniError(
                PLUGIN_NOT_AVAILABLE,
                "this node has no pod subnet yet",
                f"waiting for the agent to write {self.run_dir / 'subnet.json'}",
            )
        return b""

    def gc(self, request: CniRequest) -> bytes:
        """Release the reservations and remove the node-side veths of this network that
        no valid attachment holds — attached to the bridge or not (an ADD killed between
        making the veth and attaching it leaves one outside the bridge) — and nothing of
        any other network's."""
        network = request.config.name
        valid = set(request.config.valid_attachments or [])
        node = self._last_known_node()
        pools = self._pools(node) + self._lost_pools(node) if node is not None else []
        # Before the release: an unattached veth has no alias yet, but its reservation
        # (made before the veth) names its network.
        reserved = {
            host_veth_name(r.owner.container_id, r.owner.ifname)
            for pool in pools
            for r in pool.reservations()
            if r.owner.network == network
        }
        released = [a for pool in pools for a in pool.garbage_collect(valid, network)]
        keep = {host_veth_name(c, i) for c, i in valid}
        removed = []
        for veth in self.dataplane.host_veths():
            ours = veth.alias == veth_alias(network) or (not veth.alias and veth.name in reserved)
            if ours and veth.name not in keep:
                self.dataplane.remove_host_veth(veth.name)
                removed.append(veth.name)
        log.info(
            "GC %s: released %d addresses, removed %d interfaces",
            network,
            len(released),
            len(removed),
        )
        return b""

    # --- helpers --------------------------------------------------------------------------

    def _node(self) -> NodeState:
        node = self.node_state()
        if node is None:
            raise CniError(
                TRY_AGAIN_LATER,
                "this node has no pod subnet yet",
                "the plainnet agent has not published it; retry shortly",
            )
        return node

    def _last_known_node(self) -> NodeState | None:
        """For releasing (DEL, GC): the agent's facts, or — while a restarted agent has
        not claimed yet — the ones it last wrote, so a DEL then still frees the pod's
        addresses. Handing out (ADD) waits for the agent."""
        return self.node_state() or read_node_state(self.run_dir)

    def _pools(self, node: NodeState) -> list[PodAddressAllocator]:
        return self._pools_of(node.subnets)

    def _lost_pools(self, node: NodeState) -> list[PodAddressAllocator]:
        """The pools of subnets this node lost: only ever released from (DEL and GC free
        what pods there still hold), never handed out from."""
        return self._pools_of(node.lost_subnets)

    def _pools_of(self, subnets: tuple[IPNetwork, ...]) -> list[PodAddressAllocator]:
        return [
            PodAddressAllocator(subnet, FilePodAddressStore(store_directory(self.ipam_dir, subnet)))
            for subnet in subnets
        ]

    def stranded_pods(self) -> list[tuple[IPNetwork, Reservation]]:
        """Pods still holding addresses from subnets this node lost to another node:
        they cannot be reached any more and must be recreated."""
        node = self.node_state()
        if node is None or not node.lost_subnets:
            return []
        return [
            (pool.subnet, reservation)
            for pool in self._lost_pools(node)
            for reservation in pool.reservations()
        ]

    def _release(self, pools: list[PodAddressAllocator], request: CniRequest) -> list[Any]:
        released = []
        for pool in pools:
            released.extend(pool.release(request.container_id, request.ifname))
        return released

    def _ensure_masquerade(self, node: NodeState) -> None:
        wanted = tuple(str(c) for c in node.cluster_cidrs)
        with self._masquerade_lock:
            if self._masqueraded != wanted:
                self.dataplane.ensure_masquerade(list(node.cluster_cidrs))
                self._masqueraded = wanted

    def _prev_addresses(self, request: CniRequest) -> list[Any]:
        """The prevResult's addresses of this plugin's own interface (the pod's
        ``ifname`` in its sandbox): an earlier plugin's (``loopback``'s 127.0.0.1) are
        not plainnet's to check. (The shape was checked when the request was parsed.)"""
        prev = request.config.prev_result or {}
        interfaces = prev.get("interfaces", [])
        own = {
            index
            for index, entry in enumerate(interfaces)
            if entry.get("name") == request.ifname and entry.get("sandbox")
        }
        return [
            ip_interface(ip["address"]) for ip in prev.get("ips", []) if ip.get("interface") in own
        ]
