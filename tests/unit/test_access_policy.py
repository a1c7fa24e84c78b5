"""qastream.policy.access and qastream.policy.keys: scopes, route scopes, limits, keys, the header, the bind check."""

import hashlib
import math

import pytest

from qastream.policy.access import (
    AuthMode,
    Limits,
    Principal,
    Scope,
    bind_refusal,
    check_limits,
    format_scopes,
    is_loopback,
    parse_scopes,
    required_scope,
)
from qastream.policy.keys import MAX_TOKEN_CHARS, PREFIX, BadCredentials, bearer_token, check_name, hash_key, new_key


def test_new_keys_are_long_random_and_prefixed():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(PREFIX) and len(key) >= len(PREFIX) + 43  # 32 random bytes, base64
        assert bearer_token(f"Bearer {key}") == key  # every key qastream makes passes its own parser


def test_the_hash_is_sha256_hex_and_never_the_key():
    key = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key not in hash_key(key) and len(hash_key(key)) == 64
    assert hash_key(key) != hash_key(key + "x")


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER   abc  ", "abc"),
    ("Bearer qsk_A-b_c.d~e+f/g==", "qsk_A-b_c.d~e+f/g=="),
])
def test_bearer_token_reads_the_key(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize("header, fragment", [
    (None, "required"),
    ("", "required"),
    ("   ", "required"),
    ("Bearer", "no key"),
    ("Bearer    ", "no key"),
    ("Basic dXNlcjpwYXNz", "Bearer scheme"),
    ("Token abc", "Bearer scheme"),
    ("abc", "Bearer scheme"),
    ("Bearer abc def", "characters"),
    ("Bearer clé", "characters"),
    ("Bearer \u00e9\u00e9\u00e9", "characters"),
    ("Bearer abc\x00", "characters"),
    ("Bearer \udcff\udcfe", "characters"),  # undecodable bytes as aiohttp hands them on
    ("Bearer a=b", "characters"),
    ("Bearer " + "a" * (MAX_TOKEN_CHARS + 1), "longer"),
    ("Bearer " + "a" * 1_000_000, "longer"),
])
def test_bearer_token_refuses_hostile_headers(header, fragment):
    with pytest.raises(BadCredentials, match=fragment):
        bearer_token(header)


def test_a_refusal_never_quotes_the_key():
    key = new_key()
    for header in (f"Basic {key}", f"Bearer {key} extra", f"Bearer {key}\u00e9"):
        with pytest.raises(BadCredentials) as info:
            bearer_token(header)
        assert key not in str(info.value)


@pytest.mark.parametrize("name", ["ci", "team-a", "svc_1.prod", "A" * 64, "9lives"])
def test_good_key_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "A" * 65, "clé", "a\n"])
def test_bad_key_names(name):
    with pytest.raises(ValueError, match="not valid"):
        check_name(name)


@pytest.mark.parametrize("text, scopes", [
    ("submit", {Scope.SUBMIT}),
    ("submit,read", {Scope.SUBMIT, Scope.READ}),
    (" read , metrics ,", {Scope.READ, Scope.METRICS}),
    ("admin", {Scope.ADMIN}),
    ("read,read", {Scope.READ}),
])
def test_parse_scopes(text, scopes):
    assert parse_scopes(text) == scopes


@pytest.mark.parametrize("text, fragment", [("", "no scope"), (",", "no scope"), ("write", "'write'"),
                                            ("read,Admin", "'Admin'")])
def test_parse_scopes_refuses(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_scopes(text)


def test_format_scopes_is_canonical_and_round_trips():
    assert format_scopes(frozenset({Scope.ADMIN, Scope.SUBMIT})) == "submit,admin"
    assert parse_scopes(format_scopes(frozenset(Scope))) == set(Scope)


@pytest.mark.parametrize("route, scope", [
    ("/query", Scope.SUBMIT),
    ("/status/{question_id}", Scope.READ),
    ("/answers/latest", Scope.READ),
    ("/metrics", Scope.METRICS),
    ("/metrics/prometheus", Scope.METRICS),
    ("/health", None), ("/", None), ("/dashboard", None), ("/static/{name}", None), ("/openapi.json", None),
    ("/table/", Scope.ADMIN), ("/table/{name}/{key}/", Scope.ADMIN), ("/router/", Scope.ADMIN),
    ("/a-route-added-later", Scope.ADMIN),  # fails closed
])
def test_required_scope(route, scope):
    assert required_scope(route) == scope


@pytest.mark.parametrize("held, wanted, allowed", [
    ({Scope.SUBMIT}, Scope.SUBMIT, True),
    ({Scope.SUBMIT}, Scope.READ, False),
    ({Scope.READ, Scope.METRICS}, Scope.METRICS, True),
    ({Scope.READ}, Scope.ADMIN, False),
    ({Scope.ADMIN}, Scope.SUBMIT, True),
    ({Scope.ADMIN}, Scope.ADMIN, True),
])
def test_principal_allows(held, wanted, allowed):
    principal = Principal(1, "k", frozenset(held))
    assert principal.allows(wanted) is allowed
    assert principal.sees_everything is (Scope.ADMIN in held)


@pytest.mark.parametrize("rate, burst, in_flight, limits", [
    (None, None, None, Limits()),
    (5.0, None, None, Limits(5.0, 5, None)),
    (0.5, None, 3, Limits(0.5, 1, 3)),
    (2.5, None, None, Limits(2.5, 3, None)),
    (10.0, 20, 1, Limits(10.0, 20, 1)),
])
def test_check_limits(rate, burst, in_flight, limits):
    assert check_limits(rate, burst, in_flight) == limits


@pytest.mark.parametrize("rate, burst, in_flight, fragment", [
    (0.0, None, None, "--rate"), (-1.0, None, None, "--rate"), (math.inf, None, None, "--rate"),
    (math.nan, None, None, "--rate"), (None, 5, None, "--burst needs --rate"), (1.0, 0, None, "--burst"),
    (None, None, 0, "--max-in-flight"),
])
def test_check_limits_refuses(rate, burst, in_flight, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_limits(rate, burst, in_flight)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False),
    ("192.168.1.2", False), ("qastream", False), ("localhost.example.com", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host, mode, anonymous, refused", [
    ("127.0.0.1", AuthMode.OFF, False, False),
    ("0.0.0.0", AuthMode.OFF, False, True),
    ("10.0.0.5", AuthMode.OFF, False, True),
    ("0.0.0.0", AuthMode.OFF, True, False),
    ("0.0.0.0", AuthMode.REQUIRED, False, False),
    ("127.0.0.1", AuthMode.REQUIRED, False, False),
])
def test_bind_refusal(host, mode, anonymous, refused):
    reason = bind_refusal(host, mode, anonymous)
    assert (reason is not None) is refused
    if reason:
        assert "QASTREAM_AUTH" in reason and "QASTREAM_AUTH_ALLOW_ANONYMOUS" in reason and host in reason
