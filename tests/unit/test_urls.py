import pytest

from qastream.services.urls import redacted


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://app:s3cret@10.0.0.5/1?ssl=true", "redis://app:***@10.0.0.5/1?ssl=true"),
    ("rediss://:p%40ss@[::1]:6380", "rediss://:***@[::1]:6380"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://user@host", "redis://user@host"),
    ("", ""),
])
def test_the_password_never_shows(url, shown):
    assert redacted(url) == shown


def test_an_unparsable_url_shows_only_its_scheme():
    assert redacted("redis://:pw@host:notaport") == "redis://(unparsable URL)"
