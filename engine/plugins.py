"""Subcommands that other packages add to `nfp` through the "nfp.commands" entry-point group
(the training package's `train` and `eval`), loaded only when their own command runs.

Loading a plugin imports its package, and `training` imports torch: 1.4 s of every `nfp` call
when plugins were loaded up front, though no other command needs them. So a built-in command
never looks the plugins up (engine.cli does not even import this module then: reading the
installed packages' entry points takes 10-20 ms), `nfp --help` lists them by name without
loading them, and `nfp train …` loads `train` alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from engine.core.errors import NfpError
from engine.model.checkpoint import first_line

GROUP = "nfp.commands"  # an entry point names a function that adds its subparser: f(subparsers)


def add_plugin_commands(sub: argparse._SubParsersAction, running: str | None) -> None:
    """Add the plugins' subcommands to `sub`: the one named `running` loaded, to parse its own
    arguments; every other one as a name for the help and the usage errors."""
    for ep in entry_points(group=GROUP):
        if ep.name in sub.choices:  # a plugin never replaces a built-in command
            continue
        if ep.name == running:
            _load(ep, sub)
        else:
            _add_stand_in(sub, ep, help=f"see nfp {ep.name} -h ({ep.module})")


def _load(ep: EntryPoint, sub: argparse._SubParsersAction) -> None:
    """Let the plugin add its subcommand; one that cannot load becomes a command that says why,
    whatever arguments it is given."""
    try:
        ep.load()(sub)
    except Exception as e:  # a plugin may fail in any way; it costs its command, nothing more
        reason = f"the {ep.name!r} command is unavailable here ({ep.value}: {first_line(e)})"
        parser = sub.choices.get(ep.name) or _add_stand_in(sub, ep, help=None)
        parser.set_defaults(func=_fail_with(reason))


def _add_stand_in(
    sub: argparse._SubParsersAction, ep: EntryPoint, *, help: str | None
) -> argparse.ArgumentParser:
    parser = sub.add_parser(ep.name, help=help, add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _fail_with(reason: str) -> Callable[[argparse.Namespace], int]:
    def fail(args: argparse.Namespace) -> int:
        raise NfpError(reason)

    return fail
