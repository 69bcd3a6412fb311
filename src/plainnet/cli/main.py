"""The ``plainnet`` command.

click rather than typer or argparse: typer is a layer over click that derives options
from type hints, which saves little here and adds a second place where errors are
formatted; argparse has no nested command groups worth the name. click gives nested
groups, ``--`` pass-through for ``lab exec``, and a clean hook (``main``) where every
:class:`PlainnetError` becomes one line on stderr instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from plainnet import __version__
from plainnet.errors import PlainnetError

#: Subcommand -> "module:attribute". Loaded on first use: the agent process must not pay
#: for the lab's pyroute2 and rich, nor the lab for gRPC (start-up time and memory).
SUBCOMMANDS = {
    "advise": "plainnet.cli.advise:advise",
    "agent": "plainnet.cli.agent:agent",
    "allocator": "plainnet.cli.allocator:allocator",
    "cloud-routes": "plainnet.cli.cloud_routes:cloud_routes",
    "cni": "plainnet.cli.cni:cni",
    "doctor": "plainnet.cli.doctor:doctor",
    "etcd": "plainnet.cli.etcd:etcd",
    "ipam": "plainnet.cli.ipam:ipam",
    "lab": "plainnet.cli.lab:lab",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plainnet")
def cli() -> None:
    """Pod networking for Kubernetes with the simplest mechanism that works."""


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
