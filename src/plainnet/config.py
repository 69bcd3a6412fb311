"""The network configuration, as a validated model.

pydantic (v2) rather than hand-written checks or dataclasses + a schema library:
its validators run once at the boundary, the rest of the code receives typed
``ipaddress`` objects, and its structured errors (field path, input, message) let us
print the one line an operator needs — ``cluster CIDR 10.0.0.0/33: not a valid
network`` — instead of a report. attrs + cattrs was the other candidate; it needs
more code for the same error quality.

A backend's own settings (the VXLAN VNI and port) are validated by the backend
(:func:`plainnet.agent.backends.load_backend`): the agent reads them from etcd too, and
a host-gw agent must not load pydantic (~9 MB resident on every node) for them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from plainnet.errors import ConfigError
from plainnet.ipam.errors import IpamError
from plainnet.ipam.node_subnets import DEFAULT_NODE_PREFIX, parse_network, validate_split
from plainnet.ipam.types import IPNetwork


def _network(value: Any) -> Any:
    if isinstance(value, str):
        return parse_network(value)
    return value


Network = Annotated[IPNetwork, BeforeValidator(_network)]


class NetworkConfig(BaseModel):
    """What every plainnet component agrees on: the pod address space and how it is
    split into node subnets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_cidrs: list[Network] = Field(
        title="cluster CIDR",
        min_length=1,
        max_length=2,
        description="Pod address space; one network per address family (dual-stack: two).",
    )
    node_mask_ipv4: int = Field(
        default=DEFAULT_NODE_PREFIX[4],
        ge=1,
        le=32,
        title="IPv4 node mask",
        description="Prefix length of each node's IPv4 pod subnet.",
    )
    node_mask_ipv6: int = Field(
        default=DEFAULT_NODE_PREFIX[6],
        ge=1,
        le=128,
        title="IPv6 node mask",
        description="Prefix length of each node's IPv6 pod subnet.",
    )

    @model_validator(mode="after")
    def _split_is_usable(self) -> NetworkConfig:
        versions = [cidr.version for cidr in self.cluster_cidrs]
        if len(set(versions)) != len(versions):
            raise ValueError("at most one cluster CIDR per address family")
        for cidr in self.cluster_cidrs:
            try:
                validate_split(cidr, self.node_prefixes[cidr.version])
            except IpamError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def node_prefixes(self) -> dict[int, int]:
        return {4: self.node_mask_ipv4, 6: self.node_mask_ipv6}


def load_network_config(values: dict[str, Any]) -> NetworkConfig:
    """Validate ``values``; a bad one raises :class:`ConfigError` with one line."""
    try:
        return NetworkConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, NetworkConfig)) from None


def one_line(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first error of ``exc`` as ``<field title> <input>: <reason>``."""
    error = exc.errors(include_url=False)[0]
    field_name = error["loc"][0] if error["loc"] else None
    field = model.model_fields.get(str(field_name)) if field_name is not None else None
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {field_name!r}: remove it or check its spelling"
    if field is None:
        return reason
    label = field.title or str(field_name)
    value = error.get("input")
    if isinstance(value, list | dict):
        return f"{label}: {reason}"
    return f"{label} {value}: {reason}"
