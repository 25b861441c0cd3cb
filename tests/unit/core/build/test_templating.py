from __future__ import annotations

import itertools

import jinja2
import pytest

from airflow_provider_openai_batch.core.build.templating import (
    ENV,
    TemplateSyntaxError,
    TextTemplate,
    compile_tree,
    context,
)

TEMPLATES = [
    "{{ text }}",
    "Sentiment of: {{ text }}!",
    "{{ record.title }}: {{ record['body'] }}",
    "{{ user.name }} ({{ user['age'] }})",
    "{{ a.b.c }}",
    "braces {x} and }} literal {{ text }}",
    "{} {{ text }} {}} { {",
    "{{ text }} suffix only {}",
    "line one\r\nline two {{ text }}\r\n",
    "  {{- text -}}  tail",
    "{{ range }}",
    "{{ none }} {{ true }} {{ text }}",
    "{{ record.items }}",
    "{{ record.keys }}",
    "{{ record }}",
    "{{ text|upper }}",
    "{% if text %}yes {{ text }}{% endif %}",
    "{{ text[0] }}",
    "naïve {{ text }} 東京",
    "",
    "constant only",
]
RECORDS = [
    {"text": "hello", "title": "T", "body": "B", "user": {"name": "Ann", "age": 41}, "a": {"b": {"c": 3}}},
    {"text": "", "title": None, "body": 1.5, "user": {"name": ["x"], "age": True}, "a": {"b": {"c": None}}},
    {"text": "x", "title": "t", "body": "b", "user": "not a dict", "a": {"b": [1]}},
    {"text": "y", "items": "field named items", "keys": 1, "range": "shadowed", "user": {"name": 1, "age": 2}},
    {"title": "missing text"},
]


def jinja(source: str, record: dict) -> str | type[Exception]:
    try:
        return ENV.from_string(source).render(context(record))
    except Exception as err:
        return type(err)


def ours(source: str, record: dict) -> str | type[Exception]:
    try:
        return TextTemplate(source, "t").render(record)
    except Exception as err:
        return type(err)


@pytest.mark.parametrize(("source", "record"), list(itertools.product(TEMPLATES, RECORDS)))
def test_render_gives_exactly_what_jinja_gives_including_errors(source, record):
    assert ours(source, record) == jinja(source, record)


@pytest.mark.parametrize("source", TEMPLATES)
def test_render_many_over_a_chunk_matches_jinja_record_by_record(source):
    template = TextTemplate(source, "t")
    renderable = [r for r in RECORDS if not isinstance(jinja(source, r), type)]
    assert template.render_many(renderable) == [jinja(source, r) for r in renderable]


@pytest.mark.parametrize(
    ("source", "fast"),
    [
        ("{{ text }}", True),
        ("Sentiment of: {{ text }}!", True),
        ("{{ record.title }}: {{ record['body'] }}", True),
        ("{{ user.name }}", True),
        ("plain text", True),
        ("{{ record.items }}", False),  # the dict method, not a field: Jinja decides
        ("{{ record }}", False),
        ("{{ none }}", False),
        ("{{ text|upper }}", False),
        ("{% if text %}{{ text }}{% endif %}", False),
        ("{{ loop }}", False),
    ],
)
def test_plain_substitutions_take_the_fast_path_and_the_rest_jinja(source, fast):
    assert TextTemplate(source, "t").is_fast is fast


def test_a_missing_field_in_a_chunk_raises_jinjas_undefined_error():
    template = TextTemplate("{{ text }}", "t")
    with pytest.raises(jinja2.UndefinedError, match="'text' is undefined"):
        template.render_many([{"text": "a"}, {"other": 1}])


def test_constant_templates_are_folded():
    template = TextTemplate("a {x} b\r\n", "t")
    assert template.constant == ENV.from_string("a {x} b\r\n").render() == "a {x} b\n"


def test_syntax_error_names_where_the_template_sits():
    with pytest.raises(TemplateSyntaxError, match=r"template messages\[0\]\.content does not parse"):
        compile_tree([{"content": "{{ text "}], "messages", lambda t: t)


def test_compile_tree_makes_every_string_a_template():
    seen = []
    compile_tree(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "{{ url }}"}}]}],
        "messages",
        lambda t: seen.append(t.where) or t.source,
    )
    assert seen == ["messages[0].role", "messages[0].content[0].type", "messages[0].content[0].image_url.url"]
