"""The ``tb-convviz`` command (also ``python -m tb_convviz``): one subcommand per task on a logdir.

A subcommand is a function registered with `subcommand`: it gets its parser to add arguments to,
and returns the function that runs it. A failure the user can fix (a run, layer or step the logs
do not hold, a bad path) is one line on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from tb_convviz.read.reader import NotFound

Command = Callable[[argparse.Namespace], Optional[int]]
Setup = Callable[[argparse.ArgumentParser], Command]

_SUBCOMMANDS: dict[str, tuple[str, Setup]] = {}


def subcommand(name: str, help: str) -> Callable[[Setup], Setup]:
    """Register `setup(parser) -> run(args)` as the subcommand `name`."""

    def register(setup: Setup) -> Setup:
        _SUBCOMMANDS[name] = (help, setup)
        return setup

    return register


@subcommand("export-projector", "write a layer's filters at a step for TensorBoard's PROJECTOR tab")
def _export_projector(parser: argparse.ArgumentParser) -> Command:
    parser.add_argument("logdir", help="the log directory ConvViz wrote")
    parser.add_argument("--run", required=True, help="run name, as TensorBoard lists it")
    parser.add_argument("--layer", required=True, help="conv layer (module name)")
    parser.add_argument("--step", required=True, type=int, help="step (the latest full kernels at or before it)")
    parser.add_argument("--out", default=None, help="folder inside LOGDIR, relative to it (default: the run's projector assets folder)")

    def run(args: argparse.Namespace) -> None:
        from tb_convviz.cli.projector import export_projector

        exported = export_projector(args.logdir, args.run, args.layer, args.step, args.out)
        if exported.step != args.step:
            print(f"step {args.step} has no full kernels of {args.layer!r}: exported step {exported.step}, the latest at or before it")
        print(f"wrote {exported.config}; open TensorBoard's PROJECTOR tab (restart a running TensorBoard to see it)")

    return run


@subcommand("report", "write a run's findings, with their evidence and pictures, as one file to share")
def _report(parser: argparse.ArgumentParser) -> Command:
    parser.add_argument("logdir", help="the log directory ConvViz wrote")
    parser.add_argument("--run", required=True, help="run name, as TensorBoard lists it")
    parser.add_argument("--step", type=int, default=None, help="step (default: the run's last)")
    parser.add_argument("-o", "--out", required=True, help="the file to write (report.html, or report.md with --format md)")
    parser.add_argument("--format", choices=("html", "md"), default="html",
                        help="html: one self-contained file (default); md: Markdown with its pictures in OUT's stem + '_files/'")

    def run(args: argparse.Namespace) -> None:
        from tb_convviz.cli.report import write_report

        print(f"wrote {write_report(args.logdir, args.run, args.out, args.step, args.format)}")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tb-convviz", description="Tools for tb_convviz log directories.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, setup) in _SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command_function=setup(sub))
    from tb_convviz.cli.posthoc import add_parser as add_log_checkpoints  # its own, longer description

    add_log_checkpoints(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the subcommand; 0 on success, 2 on a usage error,
    or the subcommand's own status (log-checkpoints: 1 when a checkpoint was skipped)."""
    args = build_parser().parse_args(argv)
    try:
        status = args.command_function(args)
    except (NotFound, ValueError, OSError) as e:
        print(f"tb-convviz {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(status or 0)
