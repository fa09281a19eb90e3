"""Evaluation on the long-output benchmarks (algorithm.md 3): one class per benchmark, its
files and length targets (benchmarks), the formulas (formulas), prediction rows and
summaries (scoring), the quality judges (judge) and figures (plots). All of it is engine-free; the CLI and the engines drive it.
plots is not imported here, so that scoring never pays for matplotlib."""
from selflengthen.evaluation.benchmarks import BENCHMARKS, Benchmark, constraint_window, get_benchmark, load_items
from selflengthen.evaluation.judge import RUBRICS, judge_messages, parse_judgement, quality_score
from selflengthen.evaluation.formulas import longbench_length_score, longen_score
from selflengthen.evaluation.scoring import prediction_row, summarize

__all__ = ["BENCHMARKS", "RUBRICS", "Benchmark", "constraint_window", "get_benchmark", "judge_messages",
           "load_items", "longbench_length_score", "longen_score", "parse_judgement", "prediction_row",
           "quality_score", "summarize"]
