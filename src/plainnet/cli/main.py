"""The ``plainnet`` command.

click rather than typer or argparse: typer is a layer over click that derives options
from type hints, which saves little here and adds a second place where errors are
formatted; argparse has no nested command groups worth the name. click gives nested
groups, ``--`` pass-through for ``lab exec``, and a clean hook (``main``) where every
:class:`PlainnetError` becomes one line on stderr instead of a traceback.
"""

from __future__ import annotations

import sys

import click

from plainnet import __version__
from plainnet.errors import PlainnetError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plainnet")
def cli() -> None:
    """Pod networking for Kubernetes with the simplest mechanism that works."""


def _register() -> None:
    from plainnet.cli.agent import agent
    from plainnet.cli.etcd import etcd
    from plainnet.cli.ipam import ipam
    from plainnet.cli.lab import lab

    for command in (agent, etcd, ipam, lab):
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except PlainnetError as exc:
        click.echo(f"plainnet: {exc}", err=True)
        sys.exit(1)
    except PermissionError as exc:
        click.echo(f"plainnet: permission denied ({exc.strerror}): run as root", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
