"""Retrieval quality, measured through the public API: `ragline eval beir DIR`.

- `beir`: reading a BEIR-format dataset and picking a deterministic subset of it (pure).
- `metrics`: turning API hits into a trec run and scoring it with pytrec_eval (trec_eval's own
  definitions, what BEIR reports), plus a random-ranking baseline.
- `client`: the platform as an API client sees it: a collection, uploads, waiting, searches.
- `runner`: one evaluation end to end (starting a local platform unless given a URL) and its report.
"""
