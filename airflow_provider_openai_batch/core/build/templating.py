"""Jinja templates over records, with a fast path for plain field substitutions.

Every prompt string is a Jinja template rendered per record in a sandbox with ``StrictUndefined``,
so a misspelt field fails on the first record instead of sending empty prompts to a paid API.

Most prompts are plain substitutions (``{{ text }}``, ``{{ record.title }}``, ``{{ record['body'] }}``,
``{{ user.name }}``), and Jinja's per-call cost (a context, a generator, a join) would dominate
building a million requests. Such templates are parsed with Jinja's own parser and compiled to a
``str.format`` string plus key paths, read for a whole chunk of records in C
(``operator.itemgetter`` under ``map``). Whatever the fast path cannot vouch for goes to Jinja:
templates with filters, tests, conditions, loops or calls, and any record where a key is missing
or a value on the way is not a plain ``dict``. So the output, and every error, is Jinja's own.
"""

from __future__ import annotations

import itertools
import operator
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

ENV: Final = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)

# The name under which the whole record is visible, besides its fields at the top level.
RECORD: Final = "record"
# Names Jinja resolves specially, or that mean the record itself: always rendered by Jinja.
_NOT_FIELDS: Final = frozenset({RECORD, "self", "loop", "caller", "varargs", "kwargs", "super"})
_DICT_ONLY: Final = frozenset({dict})

Path = tuple[str, ...]


class _Miss(Exception):
    """The fast path cannot render this record exactly as Jinja would; Jinja will."""


class TemplateSyntaxError(OpenAIBatchInputError):
    """A prompt template does not parse; raised before any record is read."""


def context(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees: the record's fields, and the record itself as ``record``."""
    return {**record, RECORD: record}


class TextTemplate:
    """One prompt string: constant, a fast substitution, or a full Jinja template.

    :param source: the template text.
    :param where: where it sits in the request (``messages[1].content``), for error messages.
    """

    __slots__ = ("_affixes", "_format", "_jinja", "_paths", "constant", "source", "where")

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        try:
            tree = ENV.parse(source)
            self._jinja = ENV.from_string(tree)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateSyntaxError(f"template {where} does not parse: {err.message} (line {err.lineno})") from None
        plan = _plan(tree)
        # A template with no substitution renders the same text for every record.
        self.constant: str | None = None
        self._format: str | None = None
        self._paths: tuple[Path, ...] = ()
        if plan is not None and not plan[1]:
            self.constant = plan[0].format()
        elif plan is not None:
            self._format, self._paths = plan
        # ``prefix{}suffix``: the common case, rendered by concatenation.
        self._affixes: tuple[str, str] | None = None
        if self._format is not None and len(self._paths) == 1:
            prefix: list[str] = []
            suffix: list[str] = []
            past_field = False
            for literal, field, *_ in string.Formatter().parse(self._format):  # unescapes {{ and }}
                (suffix if past_field else prefix).append(literal)
                past_field = past_field or field is not None
            self._affixes = ("".join(prefix), "".join(suffix))

    @property
    def is_fast(self) -> bool:
        """Whether records are rendered without Jinja (constants and plain substitutions)."""
        return self.constant is not None or self._format is not None

    def render(self, record: Mapping[str, Any]) -> str:
        """Render for one record; raises Jinja's error when a field is missing."""
        if self.constant is not None:
            return self.constant
        if self._format is not None and type(record) is dict:
            try:
                return self._format.format(*[str(_dig(record, path)) for path in self._paths])
            except (_Miss, KeyError):
                pass
        return self._jinja.render(context(record))

    def render_many(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Render for a chunk of records: in C when the fast path holds for all, else one by one."""
        if self.constant is not None:
            return [self.constant] * len(records)
        if self._format is not None:
            try:
                columns = [list(map(str, _column(records, path))) for path in self._paths]
            except (_Miss, KeyError):
                pass
            else:
                if self._affixes is not None:  # one substitution: concatenation beats str.format
                    prefix, suffix = self._affixes
                    column = map(prefix.__add__, columns[0]) if prefix else columns[0]
                    return list(map(str.__add__, column, itertools.repeat(suffix))) if suffix else list(column)
                return list(map(self._format.format, *columns))
        return [self.render(record) for record in records]


def _dig(record: dict[str, Any], path: Path) -> Any:
    value: Any = record
    for key in path:
        if type(value) is not dict:
            raise _Miss
        value = value[key]
    return value


def _column(records: Sequence[Any], path: Path) -> Iterable[Any]:
    values: Iterable[Any] = records
    for key in path:
        values = values if type(values) is list else list(values)
        if set(map(type, values)) != _DICT_ONLY:
            raise _Miss
        values = map(operator.itemgetter(key), values)
    return values


def _plan(tree: nodes.Template) -> tuple[str, tuple[Path, ...]] | None:
    """``(format string, key paths)`` when the template is text and plain substitutions only."""
    if not tree.body:
        return "", ()
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    pieces: list[str] = []
    paths: list[Path] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            pieces.append(node.data.replace("{", "{{").replace("}", "}}"))
            continue
        path = _path(node)
        if not path:
            return None
        pieces.append("{}")
        paths.append(path)
    return "".join(pieces), tuple(paths)


def _path(node: nodes.Node) -> Path | None:
    """The key path an expression reads, when a dict lookup gives exactly what Jinja would.

    ``()`` stands for the record itself (only valid as the start of a longer path). Attribute
    syntax (``a.b``) is accepted only for names that are not ``dict`` attributes: the sandbox
    prefers an attribute, so ``record.items`` is the method, not the field.
    """
    if isinstance(node, nodes.Name) and node.ctx == "load":
        if node.name == RECORD:
            return ()
        return None if node.name in _NOT_FIELDS else (node.name,)
    if isinstance(node, nodes.Getattr) and not hasattr(dict, node.attr):
        base = _path(node.node)
        return None if base is None else (*base, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        base = _path(node.node)
        return None if base is None else (*base, node.arg.value)
    return None


def compile_tree(value: Any, where: str, on_template: Callable[[TextTemplate], Any]) -> Any:
    """Copy a JSON-like value, replacing each string by ``on_template(TextTemplate(...))``.

    Used for message lists and prompts: every string in them (a ``content``, a part's ``text``,
    an image URL) is a template.
    """
    if isinstance(value, str):
        return on_template(TextTemplate(value, where))
    if isinstance(value, Mapping):
        return {str(key): compile_tree(item, f"{where}.{key}", on_template) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [compile_tree(item, f"{where}[{index}]", on_template) for index, item in enumerate(value)]
    return value
