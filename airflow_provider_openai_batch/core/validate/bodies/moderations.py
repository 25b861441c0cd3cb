"""The ``/v1/moderations`` body, after ``ModerationCreateParams``.

``model`` is required here (optional in the SDK): the batch needs one model per file.
"""

from __future__ import annotations

from airflow_provider_openai_batch.core.validate.bodies.base import Body, Tagged


class ImageURL(Body):
    url: str


class ImageURLInput(Tagged, tag="image_url"):
    image_url: ImageURL


class TextInput(Tagged, tag="text"):
    text: str


class ModerationBody(Body):
    input: str | list[str | ImageURLInput | TextInput]
    model: str
