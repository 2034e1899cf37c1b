"""Request bodies of the HTTP API, with the server's limits in their fields (pydantic)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vecdoctor.config import SearchMode
from vecdoctor.search.searcher import HIT_FIELDS
from vecdoctor.serve.guard import ServerLimits


def encodable(text: str, what: str = "the text") -> str:
    """``text``, refusing what UTF-8 cannot encode (a lone surrogate from a JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds {exc.object[exc.start:exc.end]!r} at character {exc.start}, which is "
            "not valid Unicode text (a lone surrogate); send UTF-8 text"
        ) from None
    return text


HitField = Literal["id", "score", "title", "snippet", "text", "ranks_by_stage"]


def request_models(active: ServerLimits, allowed: dict[str, Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The ``/search`` and ``/v1/embeddings`` bodies for these limits and reranker names."""

    def not_blank(value: str) -> str:
        if not value.strip():
            raise ValueError("must contain at least one non-space character")
        return encodable(value)

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str = Field(
            strict=True,
            min_length=1,
            max_length=active.max_query_chars,
            description=f"at most {active.max_query_chars} characters",
        )
        k: int = Field(10, strict=True, ge=1, le=active.max_k, description=f"1..{active.max_k}")
        mode: SearchMode | None = Field(None, description="default: the index's mode")
        rerank: str | None = Field(None, description=f"one of: {', '.join(sorted(allowed))}")
        fields: list[HitField] | None = Field(
            None, max_length=len(HIT_FIELDS),
            description="what each hit carries (default: id, score, title, snippet, "
                        "ranks_by_stage; add text for the whole document)")

        _query = field_validator("query")(not_blank)

        @field_validator("rerank")
        @classmethod
        def known_reranker(cls, value: str | None) -> str | None:
            if value is not None and value not in allowed:
                raise ValueError(
                    f"unknown reranker {value!r}; available: {', '.join(sorted(allowed))}"
                )
            return value

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        input: str | list[str] = Field(
            description=f"a string or at most {active.max_batch} strings"
        )
        model: str | None = None
        encoding_format: str = Field("float", pattern="^(float|base64)$")
        dimensions: int | None = Field(None, strict=True, ge=1)
        input_type: str = Field("query", pattern="^(query|document)$")

        @field_validator("input")
        @classmethod
        def check_input(cls, value: str | list[str]) -> str | list[str]:
            texts = [value] if isinstance(value, str) else value
            if not texts:
                raise ValueError("must hold at least one string")
            if len(texts) > active.max_batch:
                raise ValueError(
                    f"holds {len(texts)} strings, more than max_batch={active.max_batch}"
                )
            for i, text in enumerate(texts):
                if not text.strip():
                    raise ValueError(f"item {i} is empty")
                encodable(text, f"item {i}")
                if len(text) > active.max_input_chars:
                    raise ValueError(
                        f"item {i} has {len(text)} characters, "
                        f"more than max_input_chars={active.max_input_chars}"
                    )
            total = sum(len(t) for t in texts)
            if total > active.max_embedding_chars:
                raise ValueError(
                    f"holds {total} characters in all, more than "
                    f"max_embedding_chars={active.max_embedding_chars}; split it into smaller requests"
                )
            return value

    return SearchRequest, EmbeddingRequest
