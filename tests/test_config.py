"""Configuration from the environment."""

import re
from pathlib import Path

from carweb.config import ROOT, Config, env_str


def test_every_variable_carweb_reads_is_documented_in_env_example():
    """`.env.example` lists every environment variable the code reads."""
    sources = "".join(p.read_text() for p in Path(ROOT, "carweb").rglob("*.py"))
    read = set(re.findall(r'env_(?:str|int|bool)\("([A-Z_]+)"', sources))
    read |= set(re.findall(r'(?:environ|env)\.get\("([A-Z_]+)"', sources))
    documented = set(re.findall(r"^([A-Z_]+)=", Path(ROOT, ".env.example").read_text(), re.M))
    assert read and read - documented == set()


def test_empty_variables_count_as_unset(monkeypatch):
    """A copied .env.example with empty values gives the defaults."""
    monkeypatch.setenv("MONGODB_URI", "")
    monkeypatch.setenv("CARWEB_PAGE_SIZE", "")
    config = Config()
    assert config.MONGODB_URI == "mongodb://127.0.0.1:27017/carweb"
    assert config.CARWEB_PAGE_SIZE == 50
    assert env_str("CARWEB_SURELY_UNSET_VARIABLE", "x") == "x"


def test_secure_cookies_follow_the_setting(monkeypatch):
    """CARWEB_SECURE_COOKIES=1 marks session and remember cookies Secure."""
    monkeypatch.setenv("CARWEB_SECURE_COOKIES", "1")
    config = Config()
    assert config.SESSION_COOKIE_SECURE and config.REMEMBER_COOKIE_SECURE
    assert config.SESSION_COOKIE_HTTPONLY and config.SESSION_COOKIE_SAMESITE == "Lax"
