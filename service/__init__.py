"""Clover Search service: FastAPI app, engine (search, re-rank, QA, indexing jobs), web page and CLI clients.

Layout (full-stack-fastapi-template style):

    main.py          create_app(settings): lifespan loads the Engine into app.state
    serve.py         `clover serve` -> uvicorn;  client_cli.py: `clover search`, `clover qa`
    core/            settings (CLOVER_* env), errors -> {"detail"}, path security, Prometheus metrics
    api/             deps (Annotated aliases), middleware, streaming (HTTP Range), uploads, routes/ per resource
    schemas/         request / response models by role
    engine/          Engine (model, reader swap, executor, batcher, jobs), SearchEngine, QAEngine, catalog reads
    static/          the web page at /
"""
