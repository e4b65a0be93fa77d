"""Zero-shot evaluation on the seven VAD benchmarks (adapters, ground truth, metrics, reports).

Entry points: ``lagovad eval`` / ``lagovad gt`` (``lagovad/commands/evaluate.py``), or
``lagovad.eval.runner.run`` with a scorer (``ModelScorer``, ``baseline.ClipBaseline``, or
external scores).
"""

from lagovad.eval.benchmarks import BENCHMARKS, EvalError, load_benchmark, load_definition

__all__ = ["BENCHMARKS", "EvalError", "load_benchmark", "load_definition"]
