"""The annexsync.* settings: value parsers, defaults, cross-checks, and reading a real config."""

from pathlib import Path

import pygit2
import pytest
from conftest import git
from hypothesis import given
from hypothesis import strategies as st

from assistant.config import (
    MassDeletePolicy,
    Settings,
    parse_bool,
    parse_duration,
    parse_massdelete,
    parse_positive_int,
    parse_size,
    read_settings,
    settings_from_values,
)
from assistant.errors import AnnexsyncError, ConfigError

MIB = 1 << 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10ms", 0.01),
        ("5ms", 0.005),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2", 2.0),
        ("0.25", 0.25),
        ("0", 0.0),
        (" 20 ms ", 0.02),
        ("1S", 1.0),
        ("3MS", 0.003),
    ],
    ids=[
        "ms",
        "small-ms",
        "s",
        "fractional-s",
        "minutes",
        "hours",
        "bare-seconds",
        "bare-fraction",
        "zero",
        "spaces",
        "upper-s",
        "upper-ms",
    ],
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration("annexsync.delay", text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["fast", "", "-1s", "1d", "1 s s", "s", "1.s", ".5s", "1e3", "10 minutes"],
    ids=[
        "word",
        "empty",
        "negative",
        "unknown-unit",
        "double-unit",
        "unit-only",
        "dangling-dot",
        "leading-dot",
        "exponent",
        "long-unit",
    ],
)
def test_parse_duration_refuses_non_durations_naming_key_and_value(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration("annexsync.delay", text)
    message = str(err.value)
    assert "annexsync.delay" in message
    assert repr(text) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MiB", 100 * MIB),
        ("100M", 100 * MIB),
        ("100mb", 100 * MIB),
        ("2G", 2 << 30),
        ("1g", 1 << 30),
        ("1t", 1 << 40),
        ("10k", 10 << 10),
        ("10KiB", 10 << 10),
        ("1.5k", 1536),
        ("4096", 4096),
        ("100B", 100),
        ("0", 0),
        (" 1 MiB ", MIB),
    ],
    ids=[
        "mib",
        "m",
        "mb-lower",
        "g",
        "g-lower",
        "t",
        "k",
        "kib",
        "fractional",
        "bare-bytes",
        "b-suffix",
        "zero",
        "spaces",
    ],
)
def test_parse_size_reads_units(text: str, size: int) -> None:
    assert parse_size("annexsync.largefiles", text) == size


@pytest.mark.parametrize(
    "text",
    ["huge", "", "-1", "1x", "MiB", "1 MiB MiB", "1e6", "1PiB"],
    ids=["word", "empty", "negative", "unknown-unit", "unit-only", "double-unit", "exp", "peta"],
)
def test_parse_size_refuses_non_sizes_naming_key_and_value(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_size("annexsync.largefiles", text)
    assert "annexsync.largefiles" in str(err.value)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("5000", 5000), (" 7 ", 7), ("+3", 3)],
    ids=["one", "large", "spaces", "plus-sign"],
)
def test_parse_positive_int_reads_whole_numbers(text: str, value: int) -> None:
    assert parse_positive_int("annexsync.maxbatch", text) == value


@pytest.mark.parametrize(
    "text",
    ["0", "-3", "abc", "1.5", "", "1k"],
    ids=["zero", "negative", "word", "fraction", "empty", "suffix"],
)
def test_parse_positive_int_refuses_anything_below_one_or_not_whole(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_positive_int("annexsync.maxbatch", text)
    assert "annexsync.maxbatch" in str(err.value)
    assert "at least 1" in str(err.value)


@given(st.integers(min_value=1, max_value=10**12))
def test_parse_positive_int_round_trips_every_positive_number(value: int) -> None:
    assert parse_positive_int("annexsync.maxbatch", str(value)) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("TRUE", True),
        (" Yes ", True),
        ("false", False),
        ("no", False),
        ("off", False),
        ("0", False),
        ("", False),
        ("False", False),
    ],
    ids=["true", "yes", "on", "1", "upper", "spaced", "false", "no", "off", "0", "empty", "cap"],
)
def test_parse_bool_accepts_gits_spellings(text: str, value: bool) -> None:
    assert parse_bool("annexsync.x", text) is value


@pytest.mark.parametrize("text", ["maybe", "2", "tru", "y"], ids=["word", "two", "typo", "y"])
def test_parse_bool_refuses_other_words(text: str) -> None:
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_bool("annexsync.x", text)


@pytest.mark.parametrize(
    ("text", "fraction", "minimum"),
    [
        ("50%,20", 0.5, 20),
        ("30%", 0.3, 20),
        ("100%,0", 1.0, 0),
        ("0%,5", 0.0, 5),
        (" 25 % , 3 ", 0.25, 3),
        ("12.5%,1", 0.125, 1),
    ],
    ids=["both", "percent-only", "all-and-zero", "zero-percent", "spaces", "fractional"],
)
def test_parse_massdelete_reads_percent_and_minimum(
    text: str, fraction: float, minimum: int
) -> None:
    policy = parse_massdelete("annexsync.massdelete", text)
    assert policy.enabled
    assert policy.fraction == pytest.approx(fraction)
    assert policy.minimum == minimum


@pytest.mark.parametrize("text", ["off", "OFF", "false", "no", "none"])
def test_parse_massdelete_off_disables_the_guard(text: str) -> None:
    policy = parse_massdelete("annexsync.massdelete", text)
    assert not policy.enabled
    assert policy.fraction is None


@pytest.mark.parametrize(
    "text",
    ["lots", "50", "150%", "-5%", "50%,x", "50%,-1", "50%,1,2", "50%,", "", "nan%", "%"],
    ids=[
        "word",
        "no-percent-sign",
        "over-100",
        "negative-percent",
        "bad-minimum",
        "negative-minimum",
        "three-parts",
        "empty-minimum",
        "empty",
        "nan",
        "sign-only",
    ],
)
def test_parse_massdelete_refuses_malformed_policies(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_massdelete("annexsync.massdelete", text)
    assert "annexsync.massdelete" in str(err.value)
    assert "50%,20" in str(err.value)


def test_default_massdelete_policy_is_over_half_and_over_twenty() -> None:
    policy = MassDeletePolicy()
    assert policy.enabled
    assert policy.fraction == 0.5
    assert policy.minimum == 20


def test_settings_defaults_match_the_documented_behaviour() -> None:
    settings = settings_from_values({}, [])
    assert settings == Settings()
    assert 0.005 <= settings.delay <= 0.02
    assert settings.maxdelay == pytest.approx(1.0)
    assert settings.largefiles == 100 * MIB
    assert settings.massdelete == MassDeletePolicy(0.5, 20)
    assert 300 <= settings.rescan <= 1200
    assert settings.maxbatch >= 1000
    assert settings.ignore == ()
    assert settings.retrydelay == 1.0
    assert 60 <= settings.retrymax <= 600
    assert settings.fullsync == 3600.0
    assert settings.poll == 60.0


def test_settings_from_values_parses_every_key() -> None:
    settings = settings_from_values(
        {
            "delay": "20ms",
            "maxdelay": "2s",
            "maxbatch": "100",
            "largefiles": "1MiB",
            "massdelete": "10%,5",
            "rescan": "1m",
            "retrydelay": "2s",
            "retrymax": "10m",
            "fullsync": "0",
            "poll": "30s",
        },
        ["*.tmp", "build/*"],
    )
    assert settings == Settings(
        delay=0.02,
        maxdelay=2.0,
        maxbatch=100,
        largefiles=MIB,
        massdelete=MassDeletePolicy(0.1, 5),
        rescan=60.0,
        ignore=("*.tmp", "build/*"),
        retrydelay=2.0,
        retrymax=600.0,
        fullsync=0.0,
        poll=30.0,
    )


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"delay": "fast"}, "annexsync.delay"),
        ({"maxdelay": "soon"}, "annexsync.maxdelay"),
        ({"maxbatch": "0"}, "annexsync.maxbatch"),
        ({"largefiles": "huge"}, "annexsync.largefiles"),
        ({"massdelete": "lots"}, "annexsync.massdelete"),
        ({"rescan": "often"}, "annexsync.rescan"),
        ({"delay": "2s", "maxdelay": "1s"}, "annexsync.maxdelay"),
        ({"delay": "2s"}, "annexsync.maxdelay"),
        ({"rescan": "500ms"}, "annexsync.rescan"),
        ({"rescan": "0"}, "annexsync.rescan"),
        ({"retrydelay": "10ms"}, "annexsync.retrydelay"),
        ({"retrydelay": "10s", "retrymax": "5s"}, "annexsync.retrymax"),
        ({"fullsync": "500ms"}, "annexsync.fullsync"),
        ({"poll": "sometimes"}, "annexsync.poll"),
    ],
    ids=[
        "bad-delay",
        "bad-maxdelay",
        "zero-maxbatch",
        "bad-largefiles",
        "bad-massdelete",
        "bad-rescan",
        "maxdelay-below-delay",
        "delay-above-default-maxdelay",
        "rescan-below-a-second",
        "rescan-zero",
        "retrydelay-too-short",
        "retrymax-below-retrydelay",
        "fullsync-below-a-second",
        "bad-poll",
    ],
)
def test_settings_from_values_refuses_bad_values_naming_the_key(
    values: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_values(values, [])
    assert key in str(err.value)
    assert isinstance(err.value, AnnexsyncError)


def test_maxdelay_equal_to_delay_is_allowed() -> None:
    settings = settings_from_values({"delay": "1s", "maxdelay": "1s"}, [])
    assert settings.delay == settings.maxdelay == 1.0


def test_read_settings_reads_a_real_repository_config(repo: Path) -> None:
    git(repo, "config", "annexsync.delay", "15ms")
    git(repo, "config", "annexsync.maxbatch", "250")
    git(repo, "config", "annexsync.largefiles", "10M")
    git(repo, "config", "annexsync.massdelete", "off")
    git(repo, "config", "--add", "annexsync.ignore", "*.bak")
    git(repo, "config", "--add", "annexsync.ignore", "cache/*")
    settings = read_settings(pygit2.Repository(str(repo)).config)
    assert settings.delay == pytest.approx(0.015)
    assert settings.maxbatch == 250
    assert settings.largefiles == 10 * MIB
    assert not settings.massdelete.enabled
    assert settings.ignore == ("*.bak", "cache/*")
    assert settings.maxdelay == Settings().maxdelay


def test_read_settings_of_an_unconfigured_repository_gives_defaults(repo: Path) -> None:
    assert read_settings(pygit2.Repository(str(repo)).config) == Settings()


def test_read_settings_refuses_a_bad_value_in_the_repository_config(repo: Path) -> None:
    git(repo, "config", "annexsync.maxbatch", "none")
    with pytest.raises(ConfigError, match=r"annexsync\.maxbatch"):
        read_settings(pygit2.Repository(str(repo)).config)
