"""Batch indexing of video libraries into a searchable index directory, and the API to read one.

Pipeline: scan -> plan (what changed) -> decode (worker processes) -> encode (the Clover video tower) -> write
(shards of fp16 embeddings and tokens, thumbnails, SQLAlchemy catalog) -> FAISS. Entry points:

- `indexer.cli.main` — `clover index build|update|merge|rebuild|delete|verify|stats`
- `indexer.merge.merge_indexes` — join the shards of a sharded build (`indexer.shard`) into one index
- `indexer.pipeline.index_paths`, `indexer.pipeline.delete_videos` — the write API (service admin endpoints)
- `indexer.reader.IndexReader` — the read API, the only way anything outside `indexer/` reads an index
"""
