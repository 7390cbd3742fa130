"""The bench harness: ``bevboost bench`` and the benchmark suites' side-by-side helpers.

A tool, apart from what a training run loads (:mod:`bevboost.profiling`: the measurement
hooks). :mod:`~bevboost.bench.harness` runs each variant in a fresh process
(:mod:`~bevboost.bench.worker`), interleaved, with a data-free ceiling run;
:mod:`~bevboost.bench.report` writes report.md/json and the charts,
:mod:`~bevboost.bench.verdict` the data-bound verdicts; :mod:`~bevboost.bench.side_by_side`
and :mod:`~bevboost.bench.toy` serve the benchmark suites.
"""
