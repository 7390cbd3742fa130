"""``bevboost doctor``: run every GPU path of the kit here and compare it with its CPU form.

Prints a table (check, form, status, figure, reason); ``--json OUT`` also
writes it as JSON. Exit status 1 when any check failed, else 0 (skipped forms
do not fail: without CUDA every GPU form is skipped with its reason).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'doctor', help='prove each GPU path on this machine against its CPU form',
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default=None,
                   help='CUDA device under test, e.g. cuda:0 (default: the current CUDA device '
                        'when torch sees one); cpu runs the CPU forms only')
    p.add_argument('--json', metavar='OUT', default=None,
                   help='also write the results to OUT as JSON (replaced if it exists)')
    p.add_argument('--only', metavar='CHECKS', default=None,
                   help='comma-separated check names (default: all of them)')
    p.set_defaults(func=run)


def _check_json_path(out: str | None) -> None:
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise ValueError(f'--json {out!r} is a directory; give a file name')
    if not path.parent.is_dir():
        raise FileNotFoundError(f'--json {out!r}: directory {str(path.parent)!r} does not exist')


def run(args: argparse.Namespace) -> int:
    from bevboost.doctor import format_table, run_checks, write_json
    from bevboost.doctor.runner import resolve_device, select

    only = [n.strip() for n in args.only.split(',') if n.strip()] if args.only else None
    select(only)  # bad input found before any work starts
    resolve_device(args.device)
    _check_json_path(args.json)
    report = run_checks(args.device, only)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
    return report.exit_code
