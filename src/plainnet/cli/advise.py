"""``plainnet advise``: which of the selection guide's situations this cluster is in,
what to run, and what would change the answer."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from ipaddress import ip_network
from pathlib import Path

import click

from plainnet.advise.decide import Advice, decide
from plainnet.advise.facts import CLOUDS, ROUTERS, DescriptionError, Facts, from_description
from plainnet.errors import PlainnetError


def render(advice: Advice) -> str:
    """The advice for people: the answer first, then why, then what to apply."""
    lines = [
        f"situation:      {advice.situation}",
        f"recommendation: {advice.recommendation}",
    ]
    if advice.addons:
        lines.append(f"add-ons:        {', '.join(advice.addons)}")
    lines += ["", "the facts it rests on:", *(f"  - {f}" for f in advice.facts)]
    if advice.warnings:
        lines += ["", "warnings:", *(f"  ! {w}" for w in advice.warnings)]
    lines += ["", "configuration:", *(f"  {c}" for c in advice.configuration.splitlines())]
    lines += ["", "what would change the answer:", *(f"  - {w}" for w in advice.would_change)]
    return "\n".join(lines)


@click.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the live cluster's Nodes (run it on a node: that node's networks "
                   "tell which nodes are on-link).")  # fmt: skip
@click.option("--describe", "description", type=click.Path(dir_okay=False, path_type=Path),
              help="A description file (YAML; examples in docs/advise/).")  # fmt: skip
@click.option("--security", type=click.Choice(["strict", "normal"]),
              help="strict: pods must be isolated (the NetworkPolicy add-on).")  # fmt: skip
@click.option(
    "--routers",
    type=click.Choice(ROUTERS),
    help="Whether you can configure the routers between the nodes' segments.",
)
@click.option(
    "--cloud",
    type=click.Choice(["none", *CLOUDS]),
    help="Override the cloud the Nodes' providerIDs name.",
)
@click.option("--route-table-limit", type=click.IntRange(1), help="Routes the VPC table holds.")
@click.option("--cluster-cidr", help="The pod address space (default 10.244.0.0/16).")
@click.option("--service-cidr", help="The service address space, to check for overlaps.")
@click.option("--json", "as_json", is_flag=True, help="The advice as JSON.")
def advise(
    kubeconfig: Path | None,
    description: Path | None,
    security: str | None,
    routers: str | None,
    cloud: str | None,
    route_table_limit: int | None,
    cluster_cidr: str | None,
    service_cidr: str | None,
    as_json: bool,
) -> None:
    """Recommend the simplest pod network for this cluster (the selection guide)."""
    if (kubeconfig is None) == (description is None):
        raise PlainnetError("give either --kubeconfig (a live cluster) or --describe FILE")
    settings = {
        "security": security,
        "routers": routers,
        "cloud": cloud,  # "none": not a cloud, whatever the Nodes say
        "route_table_limit": route_table_limit,
        "cluster_cidr": _cidr(cluster_cidr, "--cluster-cidr"),
        "service_cidr": _cidr(service_cidr, "--service-cidr"),
    }
    if description is not None:
        try:
            text = description.read_bytes()
        except OSError as exc:
            raise PlainnetError(f"cannot read {description}: {exc.strerror}") from None
        try:
            facts = from_description(text, str(description))
        except DescriptionError as exc:
            raise PlainnetError(str(exc)) from None
        facts = _override(facts, settings)
    else:
        from plainnet.advise.inspect import InspectError, read_cluster

        assert kubeconfig is not None
        try:
            facts = read_cluster(kubeconfig, **settings)
        except InspectError as exc:
            raise PlainnetError(str(exc)) from None
    advice = decide(facts)
    if as_json:
        click.echo(json.dumps(asdict(advice), indent=2))
    else:
        click.echo(render(advice))


def _cidr(text: str | None, option: str):  # type: ignore[no-untyped-def]
    if text is None:
        return None
    try:
        return ip_network(text)
    except ValueError:
        raise PlainnetError(f"{option} {text!r} is not a CIDR (like 10.244.0.0/16)") from None


def _override(facts: Facts, settings: dict) -> Facts:
    """Command-line settings win over the file's."""
    changes = {k: v for k, v in settings.items() if v is not None}
    if changes.get("cloud") == "none":
        changes["cloud"] = None
    return replace(facts, **changes)
