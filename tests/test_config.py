import pytest

from observatory.flows.cli import main
from observatory.flows.config import ConfigError, load_config, parse_config, redact_url


def test_defaults_are_valid_and_documented_example_matches_defaults():
    from pathlib import Path

    defaults = parse_config({}, env={})
    example = load_config(Path(__file__).parents[1] / "observatory.yaml", env={})
    assert example == defaults


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kafka": {"bootstrap_server": "x"}}, "kafka.bootstrap_server: unknown field"),
        ({"kafka": {"topics": {"spanz": "x"}}}, "kafka.topics.spanz: unknown field"),
        ({"pipeline": {"window_seconds": 7}}, "pipeline.window_seconds: must divide 3600"),
        ({"pipeline": {"window_seconds": 0}}, "pipeline.window_seconds"),
        ({"pipeline": {"shards": "many"}}, "pipeline.shards"),
        ({"database": {"url": "mysql://x"}}, "database.url: must be a postgresql:// URL"),
        ({"kafka": {"encodings": {"otlp_spans": "xml"}}}, "kafka.encodings.otlp_spans"),
        ({"ingest": {"tenant_attributes": []}}, "ingest.tenant_attributes"),
        ({"pricing": {"models": [{"model": "m", "input": -1}]}}, "pricing.models.0.input"),
        (
            {"pricing": {"models": [{"model": "m", "input": 1, "valid_from": "soon"}]}},
            "pricing.models.0.valid_from",
        ),
        ({"bogus": 1}, "bogus: unknown field"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="f.yaml", env={})
    assert field in str(info.value)
    assert str(info.value).startswith("f.yaml: ")


def test_environment_overrides_the_file():
    config = parse_config(
        {"kafka": {"bootstrap_servers": "file:9092"}},
        env={
            "OBSERVATORY_KAFKA_BOOTSTRAP": "env:9092",
            "OBSERVATORY_DATABASE_URL": "postgresql://a:b@h/d",
        },
    )
    assert config.kafka.bootstrap_servers == "env:9092"
    assert config.database.url == "postgresql://a:b@h/d"


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})


def test_cli_exits_2_with_one_line_per_error_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  bootstrap_server: x\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"observatory: {bad}: kafka.bootstrap_server: unknown field"]


def test_config_check_prints_effective_config_without_secrets(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(
        "database:\n  url: postgresql://u:hunter2@db:5432/x\n"
        "kafka:\n  client:\n    sasl.password: s3cret\n"
    )
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "s3cret" not in out
    assert "window_seconds: 60" in out


def test_redact_url():
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert "pw" not in redact_url("postgresql://u:pw@h/d")


def test_the_recovery_store_is_created_whole_or_not_at_all(tmp_path):
    from bytewax.recovery import init_db_dir

    from observatory.flows.cli import UserError, _ensure_recovery_store

    def killed_midway(path, partitions):
        init_db_dir(path, 1)  # one partition written, then the process dies
        raise KeyboardInterrupt

    store = tmp_path / "recovery"
    with pytest.raises(KeyboardInterrupt):
        _ensure_recovery_store(store, 8, killed_midway)
    assert not store.exists()  # nothing half-made for the next start to trip over
    _ensure_recovery_store(store, 8, init_db_dir)
    assert len(list(store.glob("part-*.sqlite3"))) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["recovery"]  # no scratch left
    _ensure_recovery_store(store, 8, init_db_dir)  # an existing store is kept
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="holds other files"):
        _ensure_recovery_store(tmp_path / "other", 8, init_db_dir)
