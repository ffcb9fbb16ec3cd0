"""GET/POST /search: text-to-video search, optionally re-ranked by the fusion encoder."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.bounds import check_page, check_rerank_k, clean_text
from service.api.deps import BaseUrlDep, EngineDep, SettingsDep
from service.engine.search import SearchFilters, SearchParams
from service.schemas.common import ERROR_RESPONSES
from service.schemas.search import SearchHitPublic, SearchRequest, SearchResponse

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)


@router.get("/search", response_model=SearchResponse)
async def search_get(
    engine: EngineDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    q: Annotated[str, Query(description="the text query")],
    k: Annotated[int, Query(description="results per page")] = 10,
    offset: Annotated[int, Query(description="results to skip")] = 0,
    rerank: Annotated[bool, Query(description="re-rank the top rerank_k videos with the fusion encoder")] = False,
    rerank_k: Annotated[int | None, Query(description="videos to re-rank")] = None,
) -> SearchResponse:
    """Search the library; results are videos, each with its best-matching moment."""
    # bounds first: they give the readable 422s, and the values are then valid for the schema
    check_page(k, offset, settings)
    check_rerank_k(rerank_k, settings)
    request = SearchRequest(q=q, k=k, offset=offset, rerank=rerank, rerank_k=rerank_k)
    return await _search(engine, settings, base, request)


@router.post("/search", response_model=SearchResponse)
async def search_post(
    body: SearchRequest, engine: EngineDep, settings: SettingsDep, base: BaseUrlDep
) -> SearchResponse:
    """Like GET /search, with `filters` on the videos that may be returned."""
    return await _search(engine, settings, base, body)


async def _search(engine: EngineDep, settings: SettingsDep, base: str, body: SearchRequest) -> SearchResponse:
    t0 = time.perf_counter()
    query = clean_text(body.q, "q", settings)
    check_page(body.k, body.offset, settings)
    rerank_k = check_rerank_k(body.rerank_k, settings)
    filters = SearchFilters(**body.filters.model_dump()) if body.filters else None
    params = SearchParams(query=query, k=body.k, offset=body.offset, rerank=body.rerank, rerank_k=rerank_k,
                          filters=filters)
    outcome = await engine.search.search(params)
    return SearchResponse(
        query=query,
        took_ms=round((time.perf_counter() - t0) * 1000, 2),
        k=body.k,
        offset=body.offset,
        has_more=outcome.has_more,
        rerank=body.rerank,
        rerank_k=outcome.reranked,
        results=[SearchHitPublic.from_hit(hit, base) for hit in outcome.hits],
    )
