from __future__ import annotations

import re
from datetime import timedelta

import pytest

from hubbub import Hub, Limits
from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError
from hubbub.message import DEFAULT_MAX_SIZE
from hubbub.results import SCHEMES as RESULT_SCHEMES
from hubbub.settings import DEFAULT_BROKER, Settings, default_results, resolve, seconds

# -- precedence: CLI > code > environment > defaults ------------------------------------------


def test_defaults_fill_what_nobody_set() -> None:
    settings = resolve({}, environ={})

    assert settings == Settings(broker=DEFAULT_BROKER, results=DEFAULT_BROKER)
    assert settings.limits == Limits(max_message_size=DEFAULT_MAX_SIZE, max_deliveries=5)


def test_code_overrides_the_defaults() -> None:
    settings = resolve({"broker": "memory://code", "lease": 5}, environ={})

    assert (settings.broker, settings.lease) == ("memory://code", 5.0)


def test_the_code_overrides_the_environment_which_fills_the_rest() -> None:
    settings = resolve(
        {"broker": "memory://code", "default_queue": None},
        environ={"HUBBUB_BROKER": "memory://env", "HUBBUB_DEFAULT_QUEUE": "env"},
    )

    assert settings.broker == "memory://code"
    assert settings.default_queue == "env"


def test_cli_overrides_the_environment_and_the_code() -> None:
    settings = resolve(
        {"broker": "memory://code"},
        cli={"broker": "memory://cli"},
        environ={"HUBBUB_BROKER": "memory://env"},
    )

    assert settings.broker == "memory://cli"


def test_none_in_a_layer_means_not_set() -> None:
    settings = resolve({"broker": "memory://code"}, cli={"broker": None}, environ={})

    assert settings.broker == "memory://code"


def test_grouped_limits_merge_field_by_field_across_layers() -> None:
    settings = resolve(
        {"limits": Limits(max_message_size=1000, max_deliveries=2)},
        cli={"limits.max_deliveries": 9},
        environ={"HUBBUB_MAX_MESSAGE_SIZE": "2000"},
    )

    assert settings.limits == Limits(max_message_size=1000, max_deliveries=9)


def test_the_environment_fills_limits_the_code_left_at_their_default() -> None:
    settings = resolve(
        {"limits": Limits(max_deliveries=2)},
        environ={"HUBBUB_MAX_MESSAGE_SIZE": "2000", "HUBBUB_MAX_DELIVERIES": "7"},
    )

    assert settings.limits == Limits(max_message_size=2000, max_deliveries=2)


def test_every_environment_variable_is_read() -> None:
    settings = resolve(
        {},
        environ={
            "HUBBUB_BROKER": "redis://localhost:6379/0",
            "HUBBUB_RESULTS": "sqlite:///results.db",
            "HUBBUB_LEASE": "12.5",
            "HUBBUB_SERIALIZER": "msgpack",
            "HUBBUB_ACCEPT": " json , pickle ,",
            "HUBBUB_RESULT_TTL": "60",
            "HUBBUB_DEFAULT_QUEUE": "jobs",
            "HUBBUB_MAX_MESSAGE_SIZE": "4096",
            "HUBBUB_MAX_DELIVERIES": "3",
        },
    )

    assert settings == Settings(
        broker="redis://localhost:6379/0",
        results="sqlite:///results.db",
        lease=12.5,
        serializer="msgpack",
        accept=frozenset({"json", "pickle", "msgpack"}),
        result_ttl=60.0,
        default_queue="jobs",
        limits=Limits(max_message_size=4096, max_deliveries=3),
    )


def test_variables_without_the_hubbub_prefix_are_ignored() -> None:
    settings = resolve({}, environ={"BROKER": "memory://no", "PATH": "/bin"})

    assert settings.broker == DEFAULT_BROKER


def test_resolve_reads_os_environ_when_no_environment_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBBUB_DEFAULT_QUEUE", "from-os")

    assert resolve({}).default_queue == "from-os"


def test_hub_takes_its_arguments_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBBUB_DEFAULT_QUEUE", "from-env")
    monkeypatch.setenv("HUBBUB_LEASE", "7")
    hub = Hub("memory://test-unit", default_queue="from-code")
    try:
        assert hub.settings.default_queue == "from-code"
        assert hub.settings.lease == 7.0
    finally:
        hub.close()


# -- unknown and invalid settings -------------------------------------------------------------


def test_an_unknown_hubbub_variable_fails_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("unknown setting HUBBUB_BROKR (did you mean 'HUBBUB_BROKER'?)"),
    ):
        resolve({}, environ={"HUBBUB_BROKR": "memory://x"})


def test_an_unknown_hubbub_variable_like_none_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError,
        match="unknown setting HUBBUB_COMPLETELY_DIFFERENT_THING; known: HUBBUB_BROKER",
    ):
        resolve({}, environ={"HUBBUB_COMPLETELY_DIFFERENT_THING": "1"})


def test_an_unknown_setting_in_code_fails_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("unknown setting 'brokr' (did you mean 'broker'?)")
    ):
        resolve({"brokr": "memory://x"}, environ={})


def test_an_unknown_setting_from_the_cli_fails_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("did you mean 'limits.max_deliveries'?")
    ):
        resolve({}, cli={"limits.max_delivery": 3}, environ={})


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("HUBBUB_LEASE", "soon", "HUBBUB_LEASE must be a number of seconds, not 'soon'"),
        ("HUBBUB_LEASE", "-1", "HUBBUB_LEASE must not be negative, got -1.0"),
        ("HUBBUB_RESULT_TTL", "1d", "HUBBUB_RESULT_TTL must be a number of seconds, not '1d'"),
        ("HUBBUB_MAX_MESSAGE_SIZE", "256k", "HUBBUB_MAX_MESSAGE_SIZE='256k' is not valid"),
        ("HUBBUB_MAX_DELIVERIES", "2.5", "HUBBUB_MAX_DELIVERIES='2.5' is not valid"),
    ],
)
def test_a_bad_number_in_the_environment_names_the_variable(
    key: str, raw: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve({}, environ={key: raw})


def test_a_zero_lease_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="lease must be more than 0 seconds"):
        resolve({"lease": 0}, environ={})


def test_a_bad_lease_in_code_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="lease must be a number of seconds, not 'x'"):
        resolve({"lease": "x"}, environ={})


def test_a_lease_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HUBBUB_LEASE"):
        resolve({}, environ={"HUBBUB_LEASE": "nan"})


def test_a_message_size_limit_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HUBBUB_MAX_MESSAGE_SIZE"):
        resolve({}, environ={"HUBBUB_MAX_MESSAGE_SIZE": "-1"})


def test_timedelta_durations_become_float_seconds() -> None:
    settings = resolve(
        {"lease": timedelta(minutes=1), "result_ttl": timedelta(hours=1)}, environ={}
    )

    assert (settings.lease, settings.result_ttl) == (60.0, 3600.0)


@pytest.mark.parametrize(
    ("value", "expected"), [(2, 2.0), ("1.5", 1.5), (timedelta(milliseconds=250), 0.25), (0, 0.0)]
)
def test_seconds_accepts_numbers_numeric_strings_and_timedeltas(
    value: object, expected: float
) -> None:
    assert seconds(value, "timeout") == expected  # type: ignore[arg-type]


def test_seconds_refuses_a_negative_timedelta() -> None:
    with pytest.raises(ConfigurationError, match="timeout must not be negative"):
        seconds(timedelta(seconds=-1), "timeout")


def test_seconds_refuses_none() -> None:
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds, not None"):
        seconds(None, "timeout")  # type: ignore[arg-type]


# -- results follow the broker ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker", "results"),
    [
        ("sqlite:///shop.db", "sqlite:///shop.db"),
        ("memory://test", "memory://test"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://secure:6380/1", "rediss://secure:6380/1"),
        ("amqp://guest:guest@localhost//", None),
        ("beanstalk://localhost:11300", None),
    ],
)
def test_default_results_follow_the_broker_when_it_can_keep_them(
    broker: str, results: str | None
) -> None:
    assert default_results(broker) == results
    assert resolve({"broker": broker}, environ={}).results == results


def test_an_explicit_results_url_wins_over_the_broker() -> None:
    settings = resolve({"broker": "amqp://localhost", "results": "redis://localhost"}, environ={})

    assert settings.results == "redis://localhost"


@pytest.mark.parametrize("value", ["none", ""])
def test_results_none_keeps_no_results(value: str) -> None:
    assert resolve({"broker": "redis://localhost", "results": value}, environ={}).results is None


def test_results_none_from_the_environment_keeps_no_results() -> None:
    settings = resolve({"broker": "sqlite:///x.db"}, environ={"HUBBUB_RESULTS": "none"})

    assert settings.results is None


def test_results_follow_a_broker_given_by_the_environment() -> None:
    settings = resolve({"broker": None}, environ={"HUBBUB_BROKER": "amqp://mq"},
                       defaults={"broker": "sqlite:///default.db"})

    assert settings.results is None


# -- serializer and accept -----------------------------------------------------------------------


def test_the_serializer_is_always_accepted() -> None:
    settings = resolve({"serializer": "msgpack", "accept": frozenset({"json"})}, environ={})

    assert settings.accept == frozenset({"json", "msgpack"})


def test_the_serializer_is_accepted_even_when_accept_names_only_others() -> None:
    settings = resolve({}, cli={"serializer": "pickle"}, environ={"HUBBUB_ACCEPT": "msgpack"})

    assert settings.accept == frozenset({"msgpack", "pickle"})


def test_pickle_is_not_accepted_by_default() -> None:
    assert "pickle" not in resolve({}, environ={}).accept


def test_a_hub_refuses_an_unknown_serializer() -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer 'yaml'"):
        Hub("memory://test-unit", serializer="yaml")


def test_a_hub_refuses_to_accept_an_unknown_codec() -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer 'yaml'"):
        Hub("memory://test-unit", accept=["json", "yaml"])


def test_settings_are_frozen() -> None:
    settings = resolve({}, environ={})

    with pytest.raises(AttributeError):
        settings.broker = "memory://other"  # type: ignore[misc]


# -- malformed URLs and suggestions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("redis://[::1/10", "closing ']'"),
        ("redis://127.0.0.1:70000", "port must be a number from 1 to 65535"),
        ("beanstalk://127.0.0.1:99999", "port must be a number from 1 to 65535"),
        ("amqp://guest:guest@127.0.0.1:70000/", "port must be a number from 1 to 65535"),
        ("amqp://a:5672/;amqp://[::1/", "closing ']'"),
        ("hubbub.db", "has no scheme"),
    ],
)
def test_a_malformed_broker_url_is_a_configuration_error_naming_the_fix(
    url: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fix)):
        resolve({"broker": url}, environ={})


def test_an_unknown_scheme_suggests_the_closest_one() -> None:
    hub = Hub("reddis://localhost:6379/0")
    try:
        with pytest.raises(ConfigurationError, match=re.escape("(did you mean 'redis'?)")):
            hub.open_transport()
    finally:
        hub.close()


@pytest.mark.parametrize(
    ("word", "choices", "hint"),
    [
        ("brokr", ["broker", "results"], " (did you mean 'broker'?)"),
        ("zzz", ["broker", "results"], ""),
        ("x", [], ""),
    ],
)
def test_did_you_mean_names_the_closest_choice_or_nothing(
    word: str, choices: list[str], hint: str
) -> None:
    assert did_you_mean(word, choices) == hint


def test_every_result_store_scheme_keeps_results_next_to_its_broker() -> None:
    for scheme in RESULT_SCHEMES:
        assert default_results(f"{scheme}://somewhere/0") == f"{scheme}://somewhere/0"


def test_default_results_follow_the_result_store_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A result store registered for a broker's scheme is enough for results to follow it.
    monkeypatch.setitem(RESULT_SCHEMES, "beanstalk", ("somewhere", "BeanstalkResults", None))

    assert default_results("beanstalk://localhost:11300") == "beanstalk://localhost:11300"
