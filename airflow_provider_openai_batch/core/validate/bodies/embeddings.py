"""The ``/v1/embeddings`` body, after ``EmbeddingCreateParams``; its inputs count towards a limit."""

from __future__ import annotations

from typing import Literal

from airflow_provider_openai_batch.core.validate.bodies.base import UNSET, Body, UnsetType


class EmbeddingBody(Body):
    input: str | list[str | int | list[int]]
    model: str
    dimensions: int | UnsetType = UNSET
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    user: str | UnsetType = UNSET
