"""``bevboost data``: data-set tools (``synth`` writes the synthetic nuScenes tree)."""
from __future__ import annotations

import argparse
import sys

from bevboost.cli import checks


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser('data', help='data-set tools')
    sub = parser.add_subparsers(dest='data_command', metavar='DATA_COMMAND', required=True)
    synth = sub.add_parser(
        'synth', help='write a synthetic nuScenes-style data set (images, LiDAR, tables, infos)')
    synth.add_argument('out', help='output data root (absent or empty, else --force)')
    synth.add_argument('--scenes', type=int, default=2, help='number of scenes (default 2)')
    synth.add_argument('--samples-per-scene', type=int, default=8,
                       help='keyframes per scene, 0.5 s apart (default 8)')
    synth.add_argument('--seed', type=int, default=0)
    synth.add_argument('--image-size', type=int, nargs=2, default=(900, 1600),
                       metavar=('H', 'W'), help='camera image size, even (default 900 1600)')
    synth.add_argument('--lidar-sweeps', type=int, default=2,
                       help='LiDAR sweeps per keyframe (default 2)')
    synth.add_argument('--force', action='store_true',
                       help='write into a non-empty OUT, overwriting files of the same names')
    synth.add_argument('--version', default='v1.0-mini', choices=('v1.0-mini', 'v1.0-trainval'))
    synth.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    synth.set_defaults(func=run)


def _check_synth_args(args: argparse.Namespace) -> None:
    """Every value in range and OUT absent or empty (else ``--force``): before writing."""
    for what, value, low, high in (('--scenes', args.scenes, 1, 1000),
                                   ('--samples-per-scene', args.samples_per_scene, 1, 1000),
                                   ('--seed', args.seed, 0, 2**32 - 1),
                                   ('--lidar-sweeps', args.lidar_sweeps, 0, 100)):
        checks.check_range(value, what, low, high)
    size = ' '.join(map(str, args.image_size))
    if any(v % 2 or not 32 <= v <= 8192 for v in args.image_size):
        raise ValueError(f'--image-size must be two even integers in [32, 8192], got {size}')
    checks.check_empty_dir(args.out, force=args.force, what='OUT')


def run(args: argparse.Namespace) -> int:
    from bevboost.synth import synthesize_nuscenes

    _check_synth_args(args)
    from bevboost.cli.phase import run_phase
    run_phase(args).start(f'writing the data set into {args.out!r}', args.out)
    bar = None
    progress = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=args.scenes * args.samples_per_scene, unit='sample',
                       desc='synth', file=sys.stderr)
            progress = lambda done, total: bar.update(done - bar.n)  # noqa: E731
        except ImportError:
            progress = lambda done, total: print(  # noqa: E731
                f'\rsynth {done}/{total} samples', end='', file=sys.stderr)
    try:
        out = synthesize_nuscenes(
            args.out, scenes=args.scenes, samples_per_scene=args.samples_per_scene,
            seed=args.seed, image_size=tuple(args.image_size), lidar_sweeps=args.lidar_sweeps,
            version=args.version, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(out)
    return 0
