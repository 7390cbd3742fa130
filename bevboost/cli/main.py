"""``bevboost`` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``
and imports its heavy dependencies inside ``run``. Bad input of any kind (argparse
errors included) is one stderr line naming the argument and the value, exit status 2,
found before any work starts (see ``bevboost.cli.checks``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bevboost._optional import MissingDependencyError

#: subcommand name -> module implementing it
SUBCOMMANDS = {
    'plan': 'bevboost.cli.plan_cmd',
    'boost': 'bevboost.cli.boost_cmd',
    'train': 'bevboost.cli.train_cmd',
    'bench': 'bevboost.cli.bench_cmd',
    'data': 'bevboost.cli.data_cmd',
}


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage block): exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f'{self.prog}: error: {one_line(message)} (see {self.prog} -h)\n')


def one_line(text: str) -> str:
    """Whitespace, newlines included, collapsed: an error is one line of stderr."""
    return ' '.join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog='bevboost',
        description='Performance kit for BEV 3D detector training on MMEngine/MMDetection3D.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # subcommand not shipped in this build
        mod.add_parser(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record, so in-process callers that swap
    it (tests capturing output) never meet a handler bound to a closed stream. Kit records
    that mmengine's logger already printed are not printed twice."""

    def __init__(self) -> None:
        from bevboost import not_forwarded
        super().__init__(sys.stderr)
        self.addFilter(not_forwarded)  # a runner's MMLogger already printed those records

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='%(levelname)s %(name)s: %(message)s', handlers=[_StderrHandler()])
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, PermissionError,
            MissingDependencyError) as exc:
        logging.getLogger(__name__).debug('bad input', exc_info=True)  # traceback with -v
        print(f'bevboost {args.command}: error: {one_line(exc)}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f'bevboost {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
