"""Run the fixed list of checks, GPU form then CPU form, and report them."""
from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from bevboost.doctor.core import CHECKS, FAILED, OK, SKIPPED, Context, Result, run_form


@dataclasses.dataclass
class Report:
    device: str
    gpu_skip_reason: str | None
    results: list[Result]
    environment: dict[str, Any]
    seconds: float = 0.0

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(r.status == s for r in self.results) for s in (OK, SKIPPED, FAILED)}
        return dict(device=self.device, gpu_skip_reason=self.gpu_skip_reason,
                    environment=self.environment, seconds=round(self.seconds, 2),
                    counts=counts, exit_code=self.exit_code,
                    checks={c.name: dict(what=c.what, tolerance=c.tolerance)
                            for c in CHECKS.values()
                            if any(r.check == c.name for r in self.results)},
                    results=[dataclasses.asdict(r) for r in self.results])


def resolve_device(device: str | None):
    """(CUDA device under test, or None with the reason the GPU forms are skipped).

    ``None`` is the current CUDA device when torch sees one. A malformed
    device, or a CUDA index this machine does not have, is a ValueError.
    """
    import torch
    if device is not None and not isinstance(device, str):
        raise TypeError(f'--device must be a string like cuda:0 or cpu, got {device!r}')
    try:
        dev = torch.device(device or 'cuda')
    except RuntimeError as exc:
        raise ValueError(f'--device {device!r} is not a device (cuda, cuda:N or cpu): '
                         f'{exc}') from None
    if dev.type == 'cpu':
        return None, '--device cpu: GPU forms not run'
    if dev.type != 'cuda':
        raise ValueError(f'--device must be cuda, cuda:N or cpu, got {device!r}')
    if not torch.cuda.is_available():
        return None, (f'no CUDA device: torch {torch.__version__} '
                      f'(CUDA build: {torch.version.cuda or "none"}) sees none')
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise ValueError(f'--device {device!r}: this machine has {count} CUDA device(s) '
                         f'(cuda:0..cuda:{count - 1})')
    return torch.device('cuda', index), None


def environment(gpu) -> dict[str, Any]:
    import torch

    import bevboost
    env = dict(bevboost=getattr(bevboost, '__version__', None), torch=torch.__version__,
               torch_cuda=torch.version.cuda, python=platform.python_version(),
               machine=platform.machine())
    if gpu is not None:
        props = torch.cuda.get_device_properties(gpu)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   gpu_capability=f'{props.major}.{props.minor}',
                   cudnn=torch.backends.cudnn.version())
    return env


def select(only: Sequence[str] | None) -> list[str]:
    """Check names to run; ValueError naming the unknown ones and the known list."""
    if not only:
        return list(CHECKS)
    unknown = [n for n in only if n not in CHECKS]
    if unknown:
        raise ValueError(f'--only: unknown check(s) {unknown}; the checks are '
                         f'{", ".join(CHECKS)}')
    return list(dict.fromkeys(only))


def run_checks(device: str | None = None, only: Sequence[str] | None = None,
               ctx: Context | None = None) -> Report:
    """Run the GPU form (on ``device``) and the CPU form of each check; never raises for
    what a check finds (see :func:`bevboost.doctor.core.run_form`).

    ``ctx``: shared inputs to reuse (the caller closes it); default: built and removed here.
    """
    import torch
    names = select(only)
    gpu, why = resolve_device(device)
    start = time.perf_counter()
    if gpu is not None:
        torch.cuda.set_device(gpu)
    own_ctx = ctx is None
    ctx = Context() if own_ctx else ctx
    results: list[Result] = []
    try:
        for name in names:
            check = CHECKS[name]
            if gpu is None:
                label = '-' if device == 'cpu' else device or 'cuda'
                results.append(Result(name, 'gpu', label, SKIPPED, reason=why))
            else:
                results.append(run_form(check, ctx, gpu, 'gpu'))
            if check.no_cpu_form:
                results.append(Result(name, 'cpu', 'cpu', SKIPPED, reason=check.no_cpu_form))
            else:
                results.append(run_form(check, ctx, torch.device('cpu'), 'cpu'))
    finally:
        if own_ctx:
            ctx.close()
    return Report(str(gpu) if gpu is not None else (device or 'cuda'), why, results,
                  environment(gpu), time.perf_counter() - start)


def format_table(report: Report) -> str:
    """The results as an aligned text table (check, form, status, figure, reason)."""
    head = ('check', 'form', 'status', 'figure', 'reason')
    rows = [(r.check, f'{r.form} ({r.device})', r.status, r.figure, r.reason)
            for r in report.results]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    lines = []
    for row in [head, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths)] + [row[4]]
        lines.append('  '.join(cells).rstrip())
    lines.insert(1, '  '.join('-' * w for w in widths) + '  ' + '-' * 6)
    counts = report.to_dict()['counts']
    lines.append(f'{counts[OK]} ok, {counts[SKIPPED]} skipped, {counts[FAILED]} failed in '
                 f'{report.seconds:.1f} s' + (f' (GPU forms: {report.gpu_skip_reason})'
                                              if report.gpu_skip_reason else
                                              f' on {report.environment.get("gpu")}'))
    return '\n'.join(lines)


def write_json(report: Report, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + '\n')
    return path
