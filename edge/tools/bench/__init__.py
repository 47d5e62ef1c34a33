"""``edge-bench``: latency benchmark of the edge pipeline (same code as ``edge-run``).

==============  ==================================================================
module          one job
==============  ==================================================================
``frames``      where benchmark frames come from: ``FramesSpec``, generated frames
``system``      machine facts (CPU, cores, OS, load average) and peak memory
``stats``       per-stage summaries (p50/p95/p99/max/mean/min) of millisecond samples
``runs``        one run: ``RunSpec`` and the run object both kinds of run fill
``runner``      one configuration, in its own process (``python -m edge.tools.bench.runner``)
``baseline``    the naive loop the pipeline is compared against
``sweep``       the configurations of one invocation, each run in a subprocess
``report``      the JSON document (schema), the Markdown tables, ``--compare``
``cli``         ``edge-bench`` argument parsing
==============  ==================================================================

The JSON schema is documented field by field in ``docs/benchmark.md``.
"""
