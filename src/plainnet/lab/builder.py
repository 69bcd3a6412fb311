"""Carry a :class:`~plainnet.lab.topology.LabPlan` out in the kernel, and undo it.

A :class:`Lab` is a context manager: ``with Lab(topology) as lab:`` builds it and tears
it down on the way out, also when the block raises. ``up()`` tears down what it had
built if it fails half-way. A lab's topology is recorded under ``/run/plainnet/labs``
so that ``plainnet lab status/exec/down`` in another process know what it holds; the
namespaces themselves carry the lab's name, so ``down`` also finds what a crashed run
left without a record.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from plainnet.errors import PlainnetError
from plainnet.interfaces import add_address
from plainnet.lab import netns
from plainnet.lab.topology import (
    PREFIX,
    HostPlan,
    LabPlan,
    Topology,
    lab_of_namespace,
    plan,
)

#: Where running labs are recorded. /run is a tmpfs: records vanish with a reboot, as
#: the namespaces do.
STATE_DIR = Path(os.environ.get("PLAINNET_LAB_STATE_DIR", "/run/plainnet/labs"))

# Every lab namespace: no router advertisements, no duplicate address detection delay
# (addresses are assigned by the plan, never conflict, and must work at once).
HOST_SYSCTLS = {
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_ra": "0",
    "net/ipv6/conf/default/accept_ra": "0",
}
ROUTER_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}
# The fabric only switches frames; without IPv6 its bridges send nothing of their own.
FABRIC_SYSCTLS = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}


class Lab:
    """An emulated network on this machine, built from a :class:`Topology`."""

    def __init__(self, topology: Topology, state_dir: Path | None = None) -> None:
        self.topology = topology
        self.plan: LabPlan = plan(topology)
        self.state_dir = state_dir or STATE_DIR
        self._processes: list[subprocess.Popen[Any]] = []

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def record_path(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @classmethod
    def load(cls, name: str, state_dir: Path | None = None) -> Lab:
        """The running lab recorded as ``name``."""
        path = (state_dir or STATE_DIR) / f"{name}.json"
        try:
            topology = Topology.model_validate_json(path.read_text())
        except FileNotFoundError:
            running = ", ".join(running_labs(state_dir)) or "none"
            raise PlainnetError(
                f"no lab named {name!r} is up (running: {running}); start one with "
                f"`plainnet lab up`"
            ) from None
        return cls(topology, state_dir)

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def up(self) -> Lab:
        leftovers = lab_namespaces(self.name)
        if leftovers or self.record_path.exists():
            raise PlainnetError(
                f"lab {self.name} is already up or left over ({len(leftovers)} namespaces): "
                f"run `plainnet lab down {self.name}` first"
            )
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(self.topology.model_dump_json(indent=1))
        tmp.replace(self.record_path)
        return self

    def down(self) -> None:
        """Stop the lab's processes and remove its namespaces (and with them every veth
        and bridge). Safe to call twice, and on a lab that was never fully built."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self._processes.clear()
        remove_lab(self.name, self.state_dir)

    def _build(self) -> None:
        fabric = self.plan.fabric_namespace
        netns.create(fabric)
        netns.write_sysctls(fabric, FABRIC_SYSCTLS)
        with IPRoute(netns=fabric) as ipr:
            _bring_up(ipr, "lo")
            for segment in self.plan.segments:
                _netlink(
                    f"create bridge {segment.bridge}",
                    ipr.link,
                    "add",
                    ifname=segment.bridge,
                    kind="bridge",
                    mtu=segment.mtu,
                )
                _bring_up(ipr, segment.bridge)
            for host in self.plan.hosts:
                self._build_host(ipr, host)

    def _build_host(self, fabric: IPRoute, host: HostPlan) -> None:
        netns.create(host.namespace)
        sysctls = HOST_SYSCTLS | (ROUTER_SYSCTLS if host.forwarding else {})
        netns.write_sysctls(host.namespace, sysctls)
        for interface in host.interfaces:
            _netlink(
                f"create veth {interface.port}",
                fabric.link,
                "add",
                ifname=interface.port,
                kind="veth",
                mtu=interface.mtu,
                peer={"ifname": interface.name, "net_ns_fd": host.namespace, "mtu": interface.mtu},
            )
            port = fabric.link_lookup(ifname=interface.port)[0]
            bridge = fabric.link_lookup(ifname=interface.bridge)[0]
            fabric.link(
                "set",
                index=port,
                master=bridge,
                state="up",
                ifalias=f"lab {self.name} host {host.name} {interface.name}",
            )
        with IPRoute(netns=host.namespace) as ipr:
            _bring_up(ipr, "lo")
            for interface in host.interfaces:
                index = ipr.link_lookup(ifname=interface.name)[0]
                for address in (interface.ipv4, interface.ipv6):
                    if address is not None:
                        _netlink(f"add {address} on {host.name}", add_address, ipr, index, address)
                ipr.link("set", index=index, state="up")
            for route in host.routes:
                _netlink(
                    f"add route {route.destination} on {host.name}",
                    ipr.route,
                    "add",
                    dst=str(route.destination),
                    gateway=str(route.gateway),
                )

    # --- running things inside ----------------------------------------------------------

    def host(self, name: str) -> HostPlan:
        try:
            return self.plan.host(name)
        except KeyError:
            hosts = ", ".join(host.name for host in self.plan.hosts)
            raise PlainnetError(f"lab {self.name} has no host {name!r} (hosts: {hosts})") from None

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host``; the lab stops it on ``down()``."""
        with netns.entering(self.host(host).namespace) as preexec:
            process = subprocess.Popen(list(argv), preexec_fn=preexec, **kwargs)
        self._processes.append(process)
        return process

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``host`` to completion (``subprocess.run`` semantics)."""
        with netns.entering(self.host(host).namespace) as preexec:
            return subprocess.run(list(argv), preexec_fn=preexec, timeout=timeout, **kwargs)

    def ping(self, source: str, address: object, *, count: int = 1, wait: float = 1) -> bool:
        """Whether ``source`` gets an ICMP echo reply from ``address``."""
        return netns.ping(self.host(source).namespace, address, count=count, wait=wait)


def _netlink(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except NetlinkError as exc:
        raise PlainnetError(f"lab: could not {what}: {os.strerror(exc.code)}") from None


def _bring_up(ipr: IPRoute, ifname: str) -> None:
    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")


# --- finding and removing labs ---------------------------------------------------------


def running_labs(state_dir: Path | None = None) -> list[str]:
    """Labs that are recorded or have namespaces."""
    directory = state_dir or STATE_DIR
    recorded = {path.stem for path in directory.glob("*.json")} if directory.exists() else set()
    found = {lab for ns in netns.list_namespaces(PREFIX) if (lab := lab_of_namespace(ns))}
    return sorted(recorded | found)


def lab_namespaces(name: str) -> list[str]:
    return [ns for ns in netns.list_namespaces(PREFIX) if lab_of_namespace(ns) == name]


def remove_lab(name: str, state_dir: Path | None = None) -> list[str]:
    """Remove every namespace of lab ``name`` and its record; returns what was removed."""
    namespaces = lab_namespaces(name)
    _remove_namespaces(namespaces)
    directory = state_dir or STATE_DIR
    (directory / f"{name}.json").unlink(missing_ok=True)
    shutil.rmtree(directory / name, ignore_errors=True)  # a cluster's etcd data, agent logs
    return namespaces


def remove_everything(state_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """Remove every ``pn-`` namespace and every ``pn-`` link of this machine's own
    namespace (leftovers of a crashed run or an older plainnet), and every lab record.
    Returns (namespaces, links) removed."""
    _remove_containers()
    namespaces = netns.list_namespaces(PREFIX)
    _remove_namespaces(namespaces)
    links: list[str] = []
    with IPRoute() as ipr:
        for link in ipr.link("dump"):
            ifname = link.get("ifname") or ""
            if ifname.startswith(PREFIX):
                try:
                    ipr.link("del", index=link["index"])
                    links.append(ifname)
                except NetlinkError:
                    pass  # already gone with its veth peer
    directory = state_dir or STATE_DIR
    if directory.exists():
        for record in directory.glob("*.json"):
            record.unlink(missing_ok=True)
        for lab_directory in directory.iterdir():
            if lab_directory.is_dir():
                shutil.rmtree(lab_directory, ignore_errors=True)
    return namespaces, links


def _remove_containers() -> None:
    """podman containers named ``pn-...`` (the image tests run the agent in lab nodes'
    namespaces): a leftover one would keep its node's namespace alive and its name taken."""
    podman = shutil.which("podman")
    if podman is None:
        return
    listed = subprocess.run(
        [podman, "ps", "--all", "--filter", f"name=^{PREFIX}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
    )
    names = [n for n in listed.stdout.split() if n.startswith(PREFIX)]
    if names:
        subprocess.run([podman, "rm", "--force", "--time=2", *names], capture_output=True)


def _remove_namespaces(namespaces: list[str]) -> None:
    # Stop the processes first: a namespace with a process inside lives on after its
    # name is removed, and so would its veths and routes.
    pids = [pid for ns in namespaces for pid in netns.pids_inside(ns)]
    netns.stop_processes(pids)
    for ns in namespaces:
        netns.remove(ns)


def describe(lab: Lab) -> dict[str, Any]:
    """What the kernel holds for ``lab``: per host, its addresses and routes as read back
    through netlink (not what the plan says)."""
    hosts: dict[str, Any] = {}
    for host in lab.plan.hosts:
        entry: dict[str, Any] = {
            "role": host.role,
            "namespace": host.namespace,
            "exists": netns.exists(host.namespace),
        }
        if entry["exists"]:
            with IPRoute(netns=host.namespace) as ipr:
                names = {link["index"]: link.get("ifname") for link in ipr.link("dump")}
                entry["addresses"] = [
                    f"{names.get(a['index'])} {a.get('address')}/{a['prefixlen']}"
                    for a in ipr.addr("dump")
                    if a.get("scope") == 0 and names.get(a["index"]) != "lo"
                ]
            entry["processes"] = len(netns.pids_inside(host.namespace))
        hosts[host.name] = entry
    return {"name": lab.name, "hosts": hosts}
