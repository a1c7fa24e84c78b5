"""Which URLs and addresses a webhook may reach: http(s), public addresses, or hosts the operator allows."""

from __future__ import annotations

import ipaddress

import pytest

from qastream.policy.webhook_targets import (
    MAX_URL_CHARS,
    Target,
    TargetRefused,
    check_url,
    parse_allowed_hosts,
    refused_address,
    refused_resolution,
)

NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize("address", [
    "8.8.8.8", "93.184.216.34", "2606:4700::1111", "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",                      # mapped public IPv4 is that address
])
def test_public_addresses_are_accepted(address):
    assert refused_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("239.255.255.250", "multicast"),
    ("240.0.0.1", "private"), ("255.255.255.255", "private"),       # reserved, which Python also counts private
    ("100.64.0.1", "not globally routable"),                         # carrier-grade NAT
    ("192.0.2.1", "private"), ("2001:db8::1", "private"),            # documentation
    ("64:ff9b::7f00:1", "reserved"),                                 # NAT64 of 127.0.0.1
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),                                   # 6to4 of 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),             # Teredo
])
def test_non_global_addresses_are_refused(address, why):
    reason = refused_address(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("url, host, port", [
    ("https://hooks.example.com/q?x=1", "hooks.example.com", 443),
    ("http://Hooks.Example.COM:8080/", "hooks.example.com", 8080),
    ("https://93.184.216.34/h", "93.184.216.34", 443),
    ("https://[2606:4700::1111]:8443/h", "2606:4700::1111", 8443),
    ("HTTPS://hooks.example.com./h", "hooks.example.com", 443),
])
def test_public_urls_are_accepted(url, host, port):
    assert check_url(url, NONE) == Target(url, host, port)


@pytest.mark.parametrize("url, why", [
    ("ftp://hooks.example.com/", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("hooks.example.com/h", "http or https"),
    ("https:///path", "no host"),
    ("https://user:pw@hooks.example.com/", "credentials"),
    ("https://hooks.example.com:99999/", "not a valid URL"),
    ("https://hooks.example.com/a b", "whitespace"),
    ("https://hooks.example.com/\x00", "control"),
    ("https://hooks.example.com/\ud800", "lone surrogate"),
    ("https://hooks.ex\udfffample.com/", "lone surrogate"),
    ("http://127.0.0.1:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.5/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[ff02::1]/", "multicast"),
    ("http://localhost:8000/", "local name"),
    ("http://api.localhost/", "local name"),
    ("http://intranet/", "local name"),
    ("https://hooks.example.com/" + "a" * MAX_URL_CHARS, "longer than"),
])
def test_refused_urls_say_why(url, why):
    with pytest.raises(TargetRefused, match=why):
        check_url(url, NONE)


@pytest.mark.parametrize("allowed, url", [
    ("127.0.0.1", "http://127.0.0.1:9000/hook"),
    (" localhost , 10.0.0.5", "http://LOCALHOST:9000/hook"),
    ("10.0.0.5", "http://10.0.0.5/"),
    ("::1", "http://[::1]:9000/"),
    ("[::1]", "http://[0:0:0:0:0:0:0:1]:9000/"),        # compared in canonical form
    ("intranet", "http://intranet/"),
])
def test_allowed_hosts_skip_the_address_checks(allowed, url):
    assert check_url(url, parse_allowed_hosts(allowed)).url == url


def test_allowing_one_host_allows_no_other():
    with pytest.raises(TargetRefused):
        check_url("http://127.0.0.2/", parse_allowed_hosts("127.0.0.1"))


def test_parse_allowed_hosts():
    assert parse_allowed_hosts("") == frozenset()
    assert parse_allowed_hosts("A.example., [::1],127.0.0.1,,") == {"a.example", "::1", "127.0.0.1"}


@pytest.mark.parametrize("host, addresses, refused", [
    ("hooks.example.com", ["93.184.216.34"], None),
    ("hooks.example.com", ["93.184.216.34", "2606:4700::1111"], None),
    ("rebind.example.com", ["127.0.0.1"], "loopback"),
    ("mixed.example.com", ["93.184.216.34", "10.0.0.1"], "private"),          # every address, not the first
    ("v6.example.com", ["::ffff:169.254.169.254"], "link-local"),
    ("scoped.example.com", ["fe80::1%eth0"], "link-local"),
    ("empty.example.com", [], "no address"),
    ("allowed.internal", ["10.0.0.1"], None),
])
def test_refused_resolution_checks_every_address(host, addresses, refused):
    reason = refused_resolution(host, addresses, parse_allowed_hosts("allowed.internal"))
    assert (reason is None) if refused is None else (reason is not None and refused in reason)
