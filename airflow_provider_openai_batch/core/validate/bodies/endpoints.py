"""One table from each batch endpoint to its line struct, body struct and extra checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any, Final

import msgspec

from airflow_provider_openai_batch.core.validate.bodies import checks, line
from airflow_provider_openai_batch.core.validate.bodies.base import UNSET


@dataclass(frozen=True)
class EndpointRules:
    """How lines for one ``url`` are checked."""

    url: str
    line_type: type[line.Line]
    body_type: type[msgspec.Struct]
    check: checks.Check
    # The body fields ``check`` looks at, when it has nothing to do while they are all unset: a
    # chunk of lines whose bodies leave them unset skips ``check`` (one C-level pass instead).
    extras: tuple[str, ...] = ()

    def plain(self, bodies: list[Any]) -> bool:
        """Whether ``check`` would pass every one of ``bodies`` untouched (see ``extras``)."""
        return bool(self.extras) and list(map(self._extras, bodies)).count(self._unset) == len(bodies)

    @cached_property
    def _extras(self) -> Callable[[Any], Any]:
        return attrgetter(*self.extras)

    @cached_property
    def _unset(self) -> Any:
        """What ``_extras`` gives for a body that sets none of them (``count`` compares by identity first)."""
        return UNSET if len(self.extras) == 1 else (UNSET,) * len(self.extras)

    def body_decoder(self) -> msgspec.json.Decoder:
        """A decoder for the body alone, used to explain a line the fast path rejected."""
        return msgspec.json.Decoder(self.body_type)


def _rules(line_type: type[line.Line], check: checks.Check, extras: tuple[str, ...] = ()) -> EndpointRules:
    url = line_type.__struct_config__.tag
    body_type = next(field.type for field in msgspec.structs.fields(line_type) if field.name == "body")
    return EndpointRules(str(url), line_type, body_type, check, extras)


_ALL: Final = (
    _rules(line.ResponsesLine, checks.check_responses, ("text", "tools")),
    _rules(line.ChatLine, checks.check_chat, ("response_format", "tools", "functions")),
    _rules(line.EmbeddingsLine, checks.check_embeddings),
    _rules(line.CompletionsLine, checks.check_completions),
    _rules(line.ModerationsLine, checks.check_moderations),
    _rules(line.ImageGenerationsLine, checks.check_images),
    _rules(line.ImageEditsLine, checks.check_loose),
    _rules(line.VideosLine, checks.check_loose),
)
RULES_BY_URL: Final[Mapping[str, EndpointRules]] = {rules.url: rules for rules in _ALL}
RULES_BY_LINE_TYPE: Final[Mapping[type, EndpointRules]] = {rules.line_type: rules for rules in _ALL}
