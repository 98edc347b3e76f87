"""The ``sp-adapter`` command: ``demo``, ``train``, ``eval``, ``deblur``, ``calibrate``.

    sp-adapter demo                                  # offline: base vs +SP, writes ./report
    sp-adapter train --run-dir runs/unet_sp --steps 20000 --alpha 0
    torchrun --nproc_per_node=4 -m sp_adapter.cli train --run-dir runs/gopro \\
        --dataset gopro --root GOPRO_Large ...
    sp-adapter eval --run-dir runs/unet_sp --dataset gopro --root GOPRO_Large
    sp-adapter deblur photo.jpg more/ --run-dir runs/unet_sp --out deblurred/ --tile 512
    sp-adapter calibrate --run-dir runs/unet_sp    # the prior's strength, on held-out photos

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``;
:mod:`sp_adapter.cli.common` holds the shared options and the one error path. Under torchrun
write ``--run-dir`` in full: torchrun reads its own options anywhere on the command line and
takes the short ``--run`` for its ``--run-path``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from sp_adapter.cli import calibrate, common, deblur, demo, distill, eval, train
from sp_adapter.version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: tuple[ModuleType, ...] = (demo, train, eval, deblur, calibrate, distill)
"""The command modules, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = common.Parser(
        prog="sp-adapter", formatter_class=common.HelpFormatter,
        description="Semantic prior for deblurring networks: train, evaluate, deblur,\n"
        "calibrate, distil, and an offline demo. `sp-adapter COMMAND --help` shows a command's\n"
        "options with their defaults and examples.",
        epilog="An error you can fix (a bad option, a missing or unreadable file, a folder\n"
        "you cannot write, no CUDA) is one `error:` line and exit status 2; set\n"
        f"{common.DEBUG_VARIABLE}=1 to see its traceback.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub).set_defaults(handler=module.run)
    return parser


def _given(parser: argparse.ArgumentParser, argv: list[str], command: str) -> set[str]:
    """The ``dest`` of every option typed on the command line (not left at its default)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    marker = object()
    namespace = argparse.Namespace(**{a.dest: marker for a in command_parser._actions
                                      if a.dest != argparse.SUPPRESS})
    rest = argv[argv.index(command) + 1:] if command in argv else argv
    command_parser.parse_known_args(rest, namespace)
    return {dest for dest, value in vars(namespace).items() if value is not marker}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sp-adapter`` console script."""
    import torch

    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(words)
    args.given = _given(parser, words, args.command)
    args.command_line = common.command_line(words)
    if args.threads:
        torch.set_num_threads(args.threads)
    return common.run_guarded(args.handler, args)
