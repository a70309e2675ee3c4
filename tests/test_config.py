"""Settings as pydantic-settings reads them: Akto's names, fallbacks, precedence, one-line errors."""

import pytest

from appliance.config import (ALIASES, IGNORED_AKTO_VARIABLES, ConfigError, Settings, ignored_variables,
                              load_settings)


def test_flags_override_the_environment():
    s = load_settings({"batch_size": "7"}, env={"AKTO_TRAFFIC_BATCH_SIZE": "500"})
    assert s.batch_size == 7
    assert load_settings(env={"AKTO_TRAFFIC_BATCH_SIZE": "500"}).batch_size == 500


def test_broker_mal_then_url_as_in_akto():
    both = {"AKTO_KAFKA_BROKER_MAL": "mal:9092", "AKTO_KAFKA_BROKER_URL": "url:9092"}
    assert load_settings(env=both).kafka_brokers == "mal:9092"
    assert load_settings(env={"AKTO_KAFKA_BROKER_URL": "url:9092"}).kafka_brokers == "url:9092"
    # Akto falls back when MAL is empty, not only when it is unset
    assert load_settings(env={**both, "AKTO_KAFKA_BROKER_MAL": ""}).kafka_brokers == "url:9092"


def test_akto_infra_mirroring_mode():
    assert load_settings(env={"AKTO_INFRA_MIRRORING_MODE": "gcp"}).mode == "gcp"
    assert load_settings(env={"AKTO_INFRA_MIRRORING_MODE": "AWS"}).mode == "aws"
    # the appliance's own variable wins over Akto's when both are set
    assert load_settings(env={"AKTO_INFRA_MIRRORING_MODE": "gcp", "APPLIANCE_MODE": "aws"}).mode == "aws"
    assert load_settings({"mode": "aws"}, env={"AKTO_INFRA_MIRRORING_MODE": "gcp"}).mode == "aws"


def test_an_empty_variable_is_unset():
    s = load_settings(env={"AKTO_TRAFFIC_BATCH_SIZE": "", "AKTO_LOG_LEVEL": ""})
    assert s.batch_size == 100 and s.log_level == "WARN"


def test_only_the_documented_names_are_read():
    """The environment is case-sensitive and field names are not variables."""
    s = load_settings(env={"batch_size": "3", "akto_traffic_batch_size": "4", "mode": "gcp"})
    assert s.batch_size == 100 and s.mode == "aws"


def test_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("TRAFFIC_MAX_ACTIVE_CONN", "123")
    monkeypatch.setenv("APPLIANCE_LOG_FORMAT", "JSON")
    assert load_settings().max_active_conn == 123 and Settings().max_active_conn == 123
    assert load_settings().log_format == "json"


@pytest.mark.parametrize("overrides, env, message", [
    ({}, {"AKTO_TRAFFIC_BATCH_SIZE": "ten"}, "invalid AKTO_TRAFFIC_BATCH_SIZE (--batch-size) = 'ten': "
                                             "Input should be a valid integer"),
    ({"batch_size": "0"}, {}, "invalid AKTO_TRAFFIC_BATCH_SIZE (--batch-size) = '0': "
                              "Input should be greater than or equal to 1"),
    ({}, {"AKTO_KAFKA_BROKER_URL": "x"}, "invalid AKTO_KAFKA_BROKER_URL (--kafka) = 'x': broker must be HOST:PORT"),
    ({}, {"AKTO_INFRA_MIRRORING_MODE": "azure"}, "invalid AKTO_INFRA_MIRRORING_MODE (--mode) = 'azure': "
                                                 "must be aws or gcp"),
    ({}, {"APPLIANCE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
     "invalid configuration: APPLIANCE_KAFKA_SASL_MECHANISM is required with SASL"),
])
def test_one_line_errors_name_the_variable_that_was_read(overrides, env, message):
    flags = {"batch_size": "--batch-size", "kafka_brokers": "--kafka", "mode": "--mode"}
    with pytest.raises(ConfigError) as e:
        load_settings(overrides, env=env, flags=flags)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_without_flags_the_error_names_only_the_variable():
    with pytest.raises(ConfigError, match=r"^invalid AKTO_TRAFFIC_BATCH_SIZE = 'ten'"):
        load_settings(env={"AKTO_TRAFFIC_BATCH_SIZE": "ten"})


def test_every_field_has_a_documented_variable():
    for field, names in ALIASES.items():
        assert names and all(n.isupper() for n in names), field
    assert ALIASES["kafka_brokers"] == ["AKTO_KAFKA_BROKER_MAL", "AKTO_KAFKA_BROKER_URL"]
    assert ALIASES["mode"] == ["APPLIANCE_MODE", "AKTO_INFRA_MIRRORING_MODE"]


def test_ignored_akto_variables_are_named():
    env = {"AKTO_MONGO_CONN": "mongodb://x", "AKTO_DISABLE_ON_DB": "", "AKTO_KAFKA_BROKER_MAL": "k:1"}
    assert ignored_variables(env) == ["AKTO_MONGO_CONN"]
    assert set(IGNORED_AKTO_VARIABLES).isdisjoint(n for names in ALIASES.values() for n in names)


def test_extra_http_methods_extend_the_built_in_list():
    s = load_settings(env={"APPLIANCE_HTTP_METHODS": "frobnicate, X-SYNC"})
    assert s.methods[-2:] == ("FROBNICATE", "X-SYNC") and "GET" in s.methods
    with pytest.raises(ConfigError, match=r"^invalid APPLIANCE_HTTP_METHODS = 'GET/1': 'GET/1' "
                                          r"is not a method name"):
        load_settings(env={"APPLIANCE_HTTP_METHODS": "GET/1"})
    assert load_settings(env={"APPLIANCE_MAX_OUTSTANDING": "16"}).max_outstanding == 16
