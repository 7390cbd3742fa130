"""``bevboost`` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``
and imports its heavy dependencies inside ``run``. Two kinds of failure, never confused:

* bad input of any kind (argparse errors included), found before any work starts
  (see ``bevboost.cli.checks``): one stderr line naming the argument and the value,
  exit status 2;
* anything raised once the run has started (``bevboost.cli.phase``: building the
  runner, the model, a dataset, a hook, an iteration, saving a checkpoint): exit
  status 1, the full traceback on stderr and in the work-dir log, and a last line
  naming the phase.

``-v`` sets the ``bevboost`` loggers to DEBUG and prints the traceback of bad input too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from bevboost._optional import MissingDependencyError

#: subcommand name -> module implementing it
SUBCOMMANDS = {
    'plan': 'bevboost.cli.plan_cmd',
    'boost': 'bevboost.cli.boost_cmd',
    'train': 'bevboost.cli.train_cmd',
    'bench': 'bevboost.cli.bench_cmd',
    'data': 'bevboost.cli.data_cmd',
    'doctor': 'bevboost.cli.doctor_cmd',
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


#: errors that, raised before the run starts, are the user's input
INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError,
                MissingDependencyError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='%(levelname)s %(name)s: %(message)s', handlers=[_StderrHandler()])
    if args.verbose:
        logging.getLogger('bevboost').setLevel(logging.DEBUG)
    from bevboost.cli.phase import run_phase
    tracker = run_phase(args)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f'bevboost {args.command}: interrupted'
              + (f' ({tracker.phase})' if tracker.started else ''), file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_refusal(exc, tracker):
            if tracker.started:
                tracker.remove_created()  # a refusal leaves nothing behind
            if args.verbose:
                traceback.print_exception(exc, file=sys.stderr)
            print(f'bevboost {args.command}: error: {one_line(exc)}', file=sys.stderr)
            return 2
        return _runtime_failure(args.command, exc, tracker)


def _is_refusal(exc: Exception, tracker) -> bool:
    """Bad input: an input error before the run started, or, before the first iteration, a
    refused resume (the checkpoint does not fit this run) or a refused recipe (the built
    run's effective batch or LR is not what the config's reference recipe implies)."""
    if not tracker.started:
        return isinstance(exc, INPUT_ERRORS)
    from bevboost.engine.accumulation_resume import ResumeRefused
    from bevboost.engine.recipe_check import RecipeMismatchError
    return isinstance(exc, (ResumeRefused, RecipeMismatchError)) and tracker.phase == 'building'


def _runtime_failure(command: str, exc: Exception, tracker) -> int:
    """Exit 1: the traceback on stderr and in the work-dir log, then the phase."""
    text = _full_traceback(exc)
    during = f' during {tracker.phase}' if tracker.started else ''
    files = tracker.write_to_log(f'bevboost {command} failed{during}:\n{text}')
    print(text, file=sys.stderr)
    where = f"; traceback also in {', '.join(files)}" if files else ''
    print(f'bevboost {command}: failed{during}: {one_line(_summary(exc))}{where}',
          file=sys.stderr)
    return 1


def _full_traceback(exc: BaseException) -> str:
    """The traceback with every suppressed context shown: mmengine's ``call_hook`` re-raises
    a hook's ``TypeError`` ``from None``, which would hide the frame that raised it."""
    parts = []
    while exc is not None:
        parts.append(''.join(traceback.format_exception(exc)).rstrip())
        context = exc.__context__ if exc.__suppress_context__ else None
        exc = context if exc.__cause__ is None else None
        if exc is not None:
            parts.append('\nDuring handling of the above exception (its traceback was '
                         'suppressed by a re-raise from None), another exception occurred:\n')
    return '\n'.join(reversed(parts))


def _summary(exc: BaseException) -> str:
    text = str(exc)
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


if __name__ == '__main__':
    sys.exit(main())
