"""Configuration: the shipped file, environment precedence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest.config import DEFAULT_BASE_URL, ConfigError, load_settings


def test_shipped_config_has_three_topics_and_no_email(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./harvest.toml here: the packaged default is used
    s = load_settings(env={})
    assert s.config_path == "(built-in harvest.toml)"
    assert sorted(s.topics) == ["dry_needling", "ims", "prolotherapy"]
    assert s.ncbi.email is None and s.ncbi.api_key is None
    assert s.ncbi.base_url == DEFAULT_BASE_URL
    assert str(s.db_path) == "db/evidence.db"
    ims = s.topics["ims"].query
    assert "intramuscular electrical stimulation" in ims and "ETOIMS" in ims
    assert '"Dry Needling"[MeSH]' in s.topics["dry_needling"].query
    assert len(s.topics["prolotherapy"].query_version) == 12


def test_env_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"NCBI_EMAIL": "a@b.org", "NCBI_API_KEY": "k", "NCBI_EUTILS_URL": "http://127.0.0.1:9/",
           "HARVEST_DB": str(tmp_path / "x.db")}
    s = load_settings(env=env)
    assert (s.ncbi.email, s.ncbi.api_key, s.ncbi.base_url) == ("a@b.org", "k", "http://127.0.0.1:9/")
    assert s.db_path == tmp_path / "x.db"
    assert load_settings(db="flag.db", env=env).db_path.name == "flag.db"  # flag beats env


def test_query_version_ignores_whitespace_but_not_words(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text('[topics.x]\nquery = """a   OR\n b"""\n')
    b = tmp_path / "b.toml"
    b.write_text('[topics.x]\nquery = "a OR b"\n')
    c = tmp_path / "c.toml"
    c.write_text('[topics.x]\nquery = "a OR c"\n')
    va, vb, vc = (load_settings(p, env={}).topics["x"].query_version for p in (a, b, c))
    assert va == vb != vc


@pytest.mark.parametrize(
    "text, message",
    [
        ("[topics\n", "not valid TOML"),
        ("[ncbi]\nbatch_size = 500\n", "no \\[topics"),
        ('[topics.x]\nquery = ""\n', "needs a non-empty query"),
        ('[topics.Bad-Name]\nquery = "a"\n', "must be lower-case"),
        ('[ncbi]\napi_key = "s"\n[topics.x]\nquery = "a"\n', "NCBI_API_KEY"),
        ('[ncbi]\nbatchsize = 5\n[topics.x]\nquery = "a"\n', "unknown key.*batchsize"),
        ('[ncbi]\nbatch_size = 0\n[topics.x]\nquery = "a"\n', "between 1 and 10000"),
        ('[ncbi]\nbackfill_from = "2020/13/01"\n[topics.x]\nquery = "a"\n', "backfill_from must be a date"),
        ('[ncbi]\nbackfill_from = "last year"\n[topics.x]\nquery = "a"\n', "backfill_from must be a date"),
        ('[ncbi]\nbackfill_from = 20200101\n[topics.x]\nquery = "a"\n', "backfill_from must be a date"),
        ('[database]\npath = 5\n[topics.x]\nquery = "a"\n', r"\[database\] path must be a string"),
    ],
)
def test_bad_config_errors(tmp_path, text, message):
    path = tmp_path / "h.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


@pytest.mark.parametrize("value, expected", [
    ("2020-01-15", "2020/01/15"),  # a TOML date, unquoted
    ('"2020/01/15"', "2020/01/15"),
    ('"2020-01"', "2020/01"),
    ('"1990"', "1990"),
])
def test_backfill_from_forms(tmp_path, value, expected):
    path = tmp_path / "h.toml"
    path.write_text(f'[ncbi]\nbackfill_from = {value}\n[topics.x]\nquery = "a"\n')
    assert load_settings(path, env={}).ncbi.backfill_from == expected


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "nope.toml", env={})


def test_bad_email(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="does not look like an address"):
        load_settings(env={"NCBI_EMAIL": "nobody"})


def test_the_rate_file_is_per_user_not_per_database(tmp_path):
    """NCBI's budget is per IP or key: every database of this user shares one file."""
    env = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    a, b = (load_settings(env=env, db=tmp_path / name).ncbi.rate_file for name in ("a.db", "b.db"))
    assert a == b == tmp_path / "xdg" / "doesitwork" / "ncbi.rate"
    home = tmp_path / "home" / ".cache" / "doesitwork" / "ncbi.rate"
    assert load_settings(env={"HOME": env["HOME"]}).ncbi.rate_file == home
    # The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
    assert load_settings(env={**env, "XDG_CACHE_HOME": "rel/cache"}).ncbi.rate_file == home
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()  # nothing made


def test_the_rate_file_from_the_file_and_the_environment(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[ncbi]\nrate_file = "~/shared/ncbi.rate"\n[topics.x]\nquery = "a"\n')
    env = {"HOME": str(tmp_path)}
    assert load_settings(path, env=env).ncbi.rate_file == tmp_path / "shared" / "ncbi.rate"
    env["NCBI_RATE_FILE"] = "~"  # the home folder itself, never a folder named "~" here
    assert load_settings(path, env=env).ncbi.rate_file == tmp_path
    env["NCBI_RATE_FILE"] = "/var/tmp/ncbi.rate"  # environment beats the file
    assert load_settings(path, env=env).ncbi.rate_file == Path("/var/tmp/ncbi.rate")
    path.write_text('[ncbi]\nrate_file = 3\n[topics.x]\nquery = "a"\n')
    with pytest.raises(ConfigError, match=r"\[ncbi\] rate_file must be a path string"):
        load_settings(path, env={})
