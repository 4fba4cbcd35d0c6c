"""Scoring: metrics with the official semantics (BLEU, exact match, Spider)."""
