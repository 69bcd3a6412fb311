"""``plainnet doctor``: check this node for what commonly breaks pod networks; one line
per check with the fact seen and the command that fixes it; exit status 1 on any FAIL."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import asdict
from ipaddress import ip_network
from pathlib import Path

import click

from plainnet.cli.options import (
    DEFAULT_CNI_CONF_DIR,
    DEFAULT_METRICS,
    kubeconfig_option,
    run_dir_option,
)
from plainnet.datastore.flannel_format import DEFAULT_PREFIX
from plainnet.doctor.checks import FAIL, OK, WARN, Finding
from plainnet.errors import PlainnetError

MARKS = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


def render(findings: list[Finding]) -> str:
    width = max(len(f.check) for f in findings)
    lines = []
    for finding in findings:
        lines.append(f"{MARKS[finding.status]}  {finding.check:<{width}}  {finding.fact}")
        if finding.fix and finding.status != OK:
            lines.append(f"      {'':<{width}}  fix: {finding.fix}")
    return "\n".join(lines)


@click.command()
@click.option("--node-name", default=socket.gethostname, show_default="hostname")
@run_dir_option("The agent's --run-dir (subnet.json, IPAM).")
@click.option(
    "--agent",
    "agent_address",
    default=DEFAULT_METRICS,
    show_default=True,
    help="The agent's --metrics HOST:PORT (/healthz, /metrics).",
)
@click.option(
    "--cni-conf-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_CNI_CONF_DIR,
    show_default=True,
)
@click.option(
    "--etcd-endpoint",
    envvar="PLAINNET_ETCD_ENDPOINT",
    metavar="URL",
    help="The etcd datastore (to compare routes with the records).",
)
@click.option("--etcd-prefix", default=DEFAULT_PREFIX, show_default=True)
@kubeconfig_option
@click.option("--service-cidr", help="The service range, to check for overlaps.")
@click.option(
    "--release-leaked", is_flag=True, help="Free pod addresses whose container is gone, then check."
)
@click.option("--probe", is_flag=True,
              help="Also ping every peer: its node, the path at full size (MTU), its VXLAN "
                   "endpoint and its pod gateway; names the hop that fails.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON.")
def doctor(
    node_name: str,
    run_dir: Path,
    agent_address: str,
    cni_conf_dir: Path,
    etcd_endpoint: str | None,
    etcd_prefix: str,
    kubeconfig: Path | None,
    service_cidr: str | None,
    release_leaked: bool,
    probe: bool,
    as_json: bool,
) -> None:
    """Check this node's pod network: kernel, firewall, agent, CNI, routes, IPAM."""
    from plainnet.doctor.checks import run_checks
    from plainnet.doctor.gather import Sources, observe
    from plainnet.doctor.gather import release_leaked as release

    try:
        service = ip_network(service_cidr) if service_cidr else None
    except ValueError:
        raise PlainnetError(f"--service-cidr {service_cidr!r} is not a CIDR") from None
    if release_leaked:
        for freed in release(run_dir):
            click.echo(f"released {freed}", err=as_json)
    sources = Sources(
        node=node_name,
        run_dir=run_dir,
        agent=agent_address,
        cni_dir=cni_conf_dir,
        etcd_endpoint=etcd_endpoint,
        etcd_prefix=etcd_prefix,
        kubeconfig=kubeconfig,
        service_cidr=service,
    )
    observation = observe(sources)
    findings = run_checks(observation)
    if probe:
        from plainnet.doctor.checks import probe_findings, probe_plan
        from plainnet.doctor.probe import ping_all

        plans = probe_plan(observation)
        answered = ping_all(list({probe for plan in plans for probe in plan.probes}))
        findings += probe_findings(observation, plans, answered)
    if as_json:
        click.echo(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        click.echo(render(findings))
    sys.exit(1 if any(f.status == FAIL for f in findings) else 0)
