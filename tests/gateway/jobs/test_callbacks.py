"""Which callback URLs are allowed, and the signature a receiver checks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.errors import CallbackNotAllowed
from gateway.jobs.callbacks import allowed_host, checked_callback, signature
from gateway.settings import Settings

HOSTS = ("receiver.hospital.org", "127.0.0.1:8080", "[::1]:9000")


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://receiver.hospital.org/done", "receiver.hospital.org"),
        ("http://RECEIVER.hospital.org:8443/x?y=1", "receiver.hospital.org"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1:8080"),
        ("http://[::1]:9000/hook", "[::1]:9000"),
    ],
)
def test_a_listed_host_is_allowed(url: str, entry: str) -> None:
    assert allowed_host(url, HOSTS) == entry


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/hook",  # another port of an entry that names one
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://receiver.hospital.org.evil.com/",
        "http://evil.com/?receiver.hospital.org",
        "http://receiver.hospital.org@evil.com/",
        "http://user@receiver.hospital.org/",  # credentials in a URL are refused outright
        "ftp://receiver.hospital.org/",
        "file:///etc/passwd",
        "receiver.hospital.org/done",
        "http://127.0.0.1:99999/",
        "",
    ],
)
def test_anything_else_is_not(url: str) -> None:
    assert allowed_host(url, HOSTS) is None


def test_callbacks_are_off_by_default() -> None:
    with pytest.raises(CallbackNotAllowed, match="JOB_CALLBACK_HOSTS is empty"):
        checked_callback("http://127.0.0.1:8080/hook", Settings())
    on = Settings(job_callback_hosts=HOSTS, job_callback_secret="s")
    assert checked_callback("http://127.0.0.1:8080/hook", on) == "http://127.0.0.1:8080/hook"
    with pytest.raises(CallbackNotAllowed, match="JOB_CALLBACK_HOSTS"):
        checked_callback("http://127.0.0.1:8081/hook", on)


def test_the_signature_is_the_hmac_of_timestamp_and_body() -> None:
    body = b'{"id": "x", "state": "succeeded"}'
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("secret", "1700000000", body) == "sha256=" + expected
    assert signature("secret", "1700000001", body) != signature("secret", "1700000000", body)
