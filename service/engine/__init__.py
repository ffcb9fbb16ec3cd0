"""The serving engine: everything the routes call. Routes hold no model, FAISS or catalog code.

`Engine` owns the loaded model, the current index reader (swapped atomically on reload), the inference
executor, the query micro-batcher and the background indexing jobs; `SearchEngine` and `QAEngine` hold the
search / re-rank / similar-video and question-answering logic on top of it.
"""

from service.engine.engine import Engine, EngineState

__all__ = ["Engine", "EngineState"]
