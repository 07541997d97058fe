"""The configuration schema: upstream's keys and defaults, the new keys, file choice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from livereduce import config as config_module
from livereduce.config import Config, ConfigError, load_config, validate


def test_defaults_are_upstreams():
    config = Config()
    assert config.update_every == 30
    assert config.preserve_events is True
    assert config.accum_method == "Add"
    assert config.periods is None
    assert config.spectra is None
    assert config.system_mem_limit_perc == 70
    assert config.mem_check_interval_sec == 1
    assert (config.watchdog.interval, config.watchdog.threshold) == (60, 300)
    assert config.env_name == "mantid_dev"
    assert (config.engine, config.start, config.run_transition) == ("auto", "from_start_of_run", "Restart")


@pytest.mark.parametrize(
    ("keys", "env"),
    [
        ({"CONDA_ENV": "sasview-dev"}, "sasview_dev"),
        ({"CONDA_ENV": "mantid-qa"}, "mantid_qa"),
        ({"CONDA_ENV": "my-dev-env"}, "my-dev-env"),  # only a suffix is mapped (livereduce.sh's rule)
        ({"CONDA_ENV": "old-dev", "PIXI_ENV": "new-dev"}, "new-dev"),  # PIXI_ENV wins, verbatim
    ],
)
def test_environment_name(keys, env):
    assert Config(**keys).env_name == env


def test_script_dir_defaults_to_the_short_name():
    assert Config(instrument="POWGEN").resolved_script_dir() == Path("/SNS/PG3/shared/livereduce")
    assert Config(instrument="NOMAD").resolved_script_dir() == Path("/SNS/NOM/shared/livereduce")
    assert Config(instrument="NOT_AN_INSTRUMENT").resolved_script_dir() == Path(
        "/SNS/NOT_AN_INSTRUMENT/shared/livereduce"
    )


def test_relative_script_dir_is_made_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Config(script_dir="scripts").resolved_script_dir() == tmp_path / "scripts"


def test_default_instrument_comes_from_mantid_properties(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".mantid").mkdir()
    (tmp_path / ".mantid" / "Mantid.user.properties").write_text("default.instrument = NOMAD\n")
    assert Config().instrument_info().short_name == "NOM"


def test_no_instrument_anywhere_is_upstreams_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(config_module.instruments, "default_instrument", lambda: None)
    with pytest.raises(ConfigError, match=r"No instrument found in the configuration or Mantid\.user\.properties"):
        Config().instrument_info()


def test_start_accepts_iso_times_and_assumes_utc():
    assert Config(start="2026-01-31T12:00:00").start == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert Config(start="now").start == "now"


@pytest.mark.parametrize(
    ("topics", "start", "message"),
    [
        ({"runInfo": None}, "from_start_of_run", "start 'from_start_of_run' needs run information"),
        ({"events": None}, "now", "'events' needs a topic"),
        ({"events": ["a", "a"]}, "now", "topic 'a' is named twice"),
        ({"events": "a", "sampleEnv": ["a"]}, "now", "topic 'a' is named for both events and sampleEnv"),
        ({"events": "a b"}, "now", "key 'topics.events.0' = \"a b\": expected a Kafka topic name"),
        ({"events": []}, "now", "key 'topics.events' = \\[\\]: List should have at least 1 item"),
    ],
)
def test_kafka_topics_each_once_and_run_information_for_from_start_of_run(topics, start, message):
    with pytest.raises(ConfigError, match=message):
        validate({"topics": topics, "start": start}, "t.conf")


def test_kafka_topics_are_a_name_a_list_or_null():
    topics = validate({"topics": {"events": ["b0", "b1"], "sampleEnv": "logs", "runInfo": None}, "start": "now"}, "x")
    assert topics.topics == {"events": ["b0", "b1"], "sampleEnv": ["logs"], "runInfo": None}


def test_numbers_given_as_strings_are_accepted_as_upstream_did():
    assert validate({"update_every": "3"}, "x").update_every == 3


def test_unknown_nested_key_names_the_section():
    with pytest.raises(ConfigError, match=r"unknown key 'watchdog.intervall' \(did you mean 'interval'\?\)"):
        validate({"watchdog": {"intervall": 5}}, "test.conf")


def test_obsolete_upstream_keys_are_ignored_with_a_record(tmp_path):
    path = tmp_path / "old.conf"
    path.write_text(json.dumps({"instrument": "PG3", "mantid_loc": "/opt/Mantid/bin", "update_every": 10}))
    loaded = load_config(str(path))
    assert loaded.obsolete_keys == ("mantid_loc",)
    assert loaded.config.update_every == 10
    assert loaded.path == path
    assert len(loaded.sha256) == 64


def test_default_file_is_used_only_when_it_exists_and_is_not_empty(tmp_path, monkeypatch):
    default = tmp_path / "livereduce.conf"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", default)
    assert load_config(None).path is None
    default.write_text("")
    assert load_config(None).path is None
    default.write_text('{"instrument": "NOMAD"}')
    assert load_config(None).config.instrument == "NOMAD"


def test_one_web_server_per_daemon_and_metrics_port_is_its_alias():
    assert validate({}, "x").web_server is None
    assert validate({"http_port": 0}, "x").web_server == ("127.0.0.1", 0)
    assert validate({"metrics_port": 9101, "metrics_address": "0.0.0.0"}, "x").web_server == ("0.0.0.0", 9101)
    assert validate({"http_port": 8401, "metrics_port": 8401}, "x").web_server == ("127.0.0.1", 8401)
    with pytest.raises(ConfigError, match="http_port 8401 and metrics_port 9101 name two ports"):
        validate({"http_port": 8401, "metrics_port": 9101}, "x.conf")


def test_http_upload_needs_credentials_and_keeps_the_password_out_of_every_dump():
    upload = validate({"http_upload": {"username": "pub", "password": "secret123"}}, "x").http_upload
    assert upload is not None
    assert (upload.max_bytes, upload.max_plots) == (10 << 20, 20)
    assert upload.password.get_secret_value() == "secret123"
    assert "secret123" not in json.dumps(validate({"http_upload": upload.model_dump()}, "x").model_dump(mode="json"))
    for bad, key in (
        ({"username": "pub"}, "http_upload.password"),
        ({"username": "pub", "password": "short"}, "http_upload.password"),
        ({"username": "pub", "password": "secret123", "max_plots": 0}, "http_upload.max_plots"),
        ({"username": "pub", "password": "secret123", "user": "x"}, "http_upload.user"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate({"http_upload": bad}, "x.conf")
