from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from airflow_provider_openai_batch.hooks.client_config import client_config_from_connection

KEY = "sk-secret-value"


@dataclass
class Conn:
    host: str | None = None
    password: str | None = KEY
    schema: str | None = None
    port: int | None = None
    extra: str | None = None


def test_plain_openai_connection_uses_defaults():
    config = client_config_from_connection(Conn())
    assert config.kwargs() == {"api_key": KEY}
    assert not config.is_azure


def test_base_url_organization_project_timeout_and_retries_reach_the_client():
    extra = json.dumps({"organization": "org-1", "project": "proj_1", "timeout": "30", "max_retries": 4})
    config = client_config_from_connection(Conn(host="http://127.0.0.1:9000/v1/", extra=extra))
    assert config.kwargs() == {
        "api_key": KEY,
        "base_url": "http://127.0.0.1:9000/v1",
        "organization": "org-1",
        "project": "proj_1",
        "timeout": 30.0,
        "max_retries": 4,
    }


def test_host_without_scheme_gets_one_and_the_port():
    config = client_config_from_connection(Conn(host="llm.internal", schema="http", port=8080))
    assert config.base_url == "http://llm.internal:8080"


def test_azure_fields_select_the_azure_client():
    extra = {"api_version": "2024-10-21", "azure_endpoint": "https://x.openai.azure.com", "azure_deployment": "d"}
    config = client_config_from_connection(Conn(extra=json.dumps(extra)))
    assert config.is_azure
    assert config.kwargs() == {
        "api_key": KEY,
        "api_version": "2024-10-21",
        "azure_endpoint": "https://x.openai.azure.com",
        "azure_deployment": "d",
    }


def test_official_openai_provider_connection_fields_work():
    # The official provider's ``openai`` connections put client options under openai_client_kwargs.
    extra = json.dumps({"openai_client_kwargs": {"default_headers": {"X-Team": "data"}}})
    config = client_config_from_connection(Conn(host="https://api.openai.com/v1", extra=extra))
    assert config.kwargs()["default_headers"] == {"X-Team": "data"}


def test_prefixed_ui_field_names_are_understood():
    config = client_config_from_connection(Conn(extra=json.dumps({"extra__openai_batch__project": "proj_2"})))
    assert config.project == "proj_2"


def test_repr_and_errors_never_show_the_key():
    config = client_config_from_connection(Conn())
    assert KEY not in repr(config)
    with pytest.raises(ValueError, match="'timeout' must be a number") as err:
        client_config_from_connection(Conn(extra=json.dumps({"timeout": "soon"})))
    assert KEY not in str(err.value)


def test_extra_that_is_not_json_is_a_clear_error():
    with pytest.raises(ValueError, match="extra is not valid JSON"):
        client_config_from_connection(Conn(extra="{oops"))


def test_the_retry_policy_extra_is_kept_apart_from_the_client_kwargs():
    config = client_config_from_connection(Conn(extra=json.dumps({"call_retries": {"attempts": 3, "max_delay": 5}})))
    assert config.call_retries == {"attempts": 3, "max_delay": 5}
    assert "call_retries" not in config.kwargs()


@pytest.mark.parametrize(
    "value", [{"tries": 3}, {"attempts": 0}, {"max_delay": "5"}, {"base_delay": True}, [3]], ids=str
)
def test_a_retry_policy_extra_that_is_not_one_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="connection extra 'call_retries'"):
        client_config_from_connection(Conn(extra=json.dumps({"call_retries": value})))


@pytest.mark.parametrize("stored", ["sk-abc123\n", "sk-abc123\r\n", "  sk-abc123 \t"])
def test_a_key_read_from_a_file_is_sent_without_its_surrounding_whitespace(stored):
    assert client_config_from_connection(Conn(password=stored)).api_key == "sk-abc123"


@pytest.mark.parametrize("stored", ["sk-abc\n123", "sk-abc 123", "sk-abcé123"])
def test_a_key_no_header_can_carry_is_refused_by_position_without_quoting_it(stored):
    with pytest.raises(ValueError, match="position 7 of") as refused:
        client_config_from_connection(Conn(password=stored))
    assert "abc" not in str(refused.value)
