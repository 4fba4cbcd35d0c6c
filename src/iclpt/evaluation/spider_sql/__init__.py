"""Internal pieces of the Spider evaluator; the public API is :mod:`iclpt.evaluation.spider_eval`."""
