"""``plainnet cni``: install the CNI plugin on this node."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def cni() -> None:
    """The CNI plugin (served by the agent)."""


@cni.command()
@click.option(
    "--bin-dir", type=click.Path(path_type=Path), default=Path("/opt/cni/bin"), show_default=True
)
@click.option(
    "--conf-dir", type=click.Path(path_type=Path), default=Path("/etc/cni/net.d"), show_default=True
)
@click.option(
    "--portmap/--no-portmap",
    default=True,
    show_default=True,
    help="Chain the reference portmap plugin for hostPorts.",
)
def install(bin_dir: Path, conf_dir: Path, portmap: bool) -> None:
    """Place the plugin executable and the conflist, as a DaemonSet init container would."""
    from plainnet.cni.install import install as do_install

    plugin, config, kind = do_install(bin_dir, conf_dir, portmap=portmap)
    click.echo(f"installed {plugin} ({kind}) and {config}")
