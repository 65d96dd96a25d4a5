"""Evaluation on the BabyLM suite (SPEC §4).

Zero-shot minimal pairs (BLiMP, the BLiMP supplement, EWoK), scored pair for pair as the BabyLM
2024 pipeline scores causal LMs, but batched: `tasks` reads the data, `scoring` turns texts into
token requests and sums their log-probabilities, `results` decides, aggregates and writes the files,
and `zero_shot` ties them together for `tinyminds evaluate`.
"""
