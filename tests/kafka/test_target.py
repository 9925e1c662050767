"""Reading ``kafka://`` URLs and naming topics: no server needed. How the options reach the
clients against a real server is in test_components.py."""

from __future__ import annotations

import hashlib

import pytest
from qtasks.errors import ConfigError
from qtasks_kafka.target import parse


def test_a_queue_name_ending_like_a_digest_gets_a_topic_of_its_own() -> None:
    target = parse("kafka://127.0.0.1:9092")
    mapped = target.topic("a b")  # a space: replaced, and a digest of the name appended
    assert mapped == "qtasks.a_b-" + hashlib.sha256(b"a b").hexdigest()[:12]
    lookalike = mapped.removeprefix("qtasks.")  # a valid name, equal to the mapped form of "a b"
    assert target.topic(lookalike) != mapped
    assert target.topic(lookalike).startswith(f"qtasks.{lookalike}-")
    assert target.topic("emails-high") == "qtasks.emails-high"  # ordinary names are kept as they are


def test_every_topic_fits_kafkas_249_characters_whatever_the_prefix() -> None:
    for prefix in ("q", "qtasks", "p" * 100):
        target = parse(f"kafka://127.0.0.1:9092?prefix={prefix}")
        for length in (1, 147, 148, 149, 200, 201, 300, 5000):
            topic = target.topic("q" * length)
            assert len(topic) <= 249, (prefix, length, len(topic))
            assert topic.startswith(f"{prefix}.q")
        assert target.topic("q" * 300) != target.topic("q" * 301)
    short = parse("kafka://127.0.0.1:9092")
    assert short.topic("q" * 200) == "qtasks." + "q" * 200  # names that fitted before keep their topic


def test_an_error_about_a_password_holding_a_question_mark_quotes_none_of_it() -> None:
    for url in ("kafka://user:se?cret@127.0.0.1:9092", "kafka://user:12?cret@127.0.0.1:9092"):
        with pytest.raises(ConfigError) as info:
            parse(url)
        message = str(info.value)
        assert "cret" not in message and "user:se" not in message and "user:12" not in message, message
        assert "kafka://***@127.0.0.1:9092" in message and "percent-encode" in message
    with pytest.raises(ConfigError, match="'h:port' is not host:port"):  # a URL without credentials says which
        parse("kafka://127.0.0.1:9092,h:port")


@pytest.mark.parametrize("url", ["kafka://127.0.0.1:\u00b2", "kafka://127.0.0.1:9092?partitions=\u00b2"])
def test_a_port_or_number_in_digits_other_than_ascii_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        parse(url)


def test_a_percent_encoded_colon_belongs_to_the_user_name() -> None:
    target = parse("kafka://a%3Ab:p%3Aw%40rd@127.0.0.1:9092")
    assert (target.security["sasl_plain_username"], target.security["sasl_plain_password"]) == ("a:b", "p:w@rd")
