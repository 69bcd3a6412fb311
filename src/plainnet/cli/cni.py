"""``plainnet cni``: install and uninstall the CNI plugin on this node."""

from __future__ import annotations

from pathlib import Path

import click

from plainnet.cli.options import DEFAULT_CNI_CONF_DIR


@click.group()
def cni() -> None:
    """The CNI plugin (served by the agent)."""


@cni.command()
@click.option(
    "--bin-dir", type=click.Path(path_type=Path), default=Path("/opt/cni/bin"), show_default=True
)
@click.option(
    "--conf-dir", type=click.Path(path_type=Path), default=DEFAULT_CNI_CONF_DIR, show_default=True
)
@click.option(
    "--portmap/--no-portmap",
    default=True,
    show_default=True,
    help="Chain the reference portmap plugin for hostPorts.",
)
def install(bin_dir: Path, conf_dir: Path, portmap: bool) -> None:
    """Place the plugin executable, the reference plugins it chains (portmap) and the
    conflist, as the DaemonSet's init container does."""
    from plainnet.cni.install import install as do_install

    done = do_install(bin_dir, conf_dir, portmap=portmap)
    click.echo(f"installed {done.plugin} ({done.kind}) and {done.conflist}")
    for name in done.copied:
        click.echo(f"installed {bin_dir / name} (reference plugin the conflist chains)")
    for name in done.kept:
        click.echo(f"kept this node's own {bin_dir / name}")
    for name in done.missing:
        click.echo(
            f"warning: no {name} plugin found (install containernetworking-plugins): "
            f"left out of the chain, so pods get no hostPorts",
            err=True,
        )


@cni.command()
@click.option(
    "--bin-dir", type=click.Path(path_type=Path), default=Path("/opt/cni/bin"), show_default=True
)
@click.option(
    "--conf-dir", type=click.Path(path_type=Path), default=DEFAULT_CNI_CONF_DIR, show_default=True
)
def uninstall(bin_dir: Path, conf_dir: Path) -> None:
    """Remove the conflist and the executables `plainnet cni install` placed (a portmap
    the node had before is kept)."""
    from plainnet.cni.install import uninstall as do_uninstall

    removed = do_uninstall(bin_dir, conf_dir)
    click.echo("removed " + (", ".join(map(str, removed)) or "nothing (not installed)"))
