"""Evaluation on the long-output benchmarks (algorithm.md 3): one class per benchmark, its
files, length targets and scores (benchmarks), the formulas (formulas), prediction rows and
summaries (scoring), what a quality judge is asked and how its answer is read (rubrics),
opening the judge's engine (judging), a benchmark's run over an engine (runner), the loop's
evaluation of each iteration (in_run) and figures (plots). Only judging, runner and in_run
touch an engine. plots is not imported here, so that scoring never pays for matplotlib."""
from selflengthen.evaluation.benchmarks import BENCHMARKS, Benchmark, LongBenchWrite, get_benchmark, load_items
from selflengthen.evaluation.formulas import longbench_length_score, longen_score
from selflengthen.evaluation.rubrics import RUBRICS, judge_messages, parse_judgement, quality_score
from selflengthen.evaluation.scoring import prediction_row, summarize

__all__ = ["BENCHMARKS", "RUBRICS", "Benchmark", "LongBenchWrite", "get_benchmark",
           "judge_messages", "load_items", "longbench_length_score", "longen_score", "parse_judgement",
           "prediction_row", "quality_score", "summarize"]
