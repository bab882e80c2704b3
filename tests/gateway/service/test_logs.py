from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import configure_logging, request_id_var


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_the_request_id_and_extras() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("gateway.test")
    log.info("outside")
    token = request_id_var.set("rid-1")
    try:
        log.info("inside %s", "a request", extra={"status": 200})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        request_id_var.reset(token)
    log.debug("dropped below the level")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["outside", "inside a request", "failed"]
    assert [line["request_id"] for line in lines] == [None, "rid-1", "rid-1"]
    assert lines[1]["status"] == 200
    assert lines[1]["level"] == "INFO"
    assert lines[1]["logger"] == "gateway.test"
    assert "ValueError: boom" in lines[2]["exception"]


@pytest.mark.usefixtures("restore_root_logger")
def test_text_lines() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream)
    token = request_id_var.set("rid-2")
    try:
        logging.getLogger("gateway.test").debug("hello", extra={"route": "/ping"})
    finally:
        request_id_var.reset(token)
    line = stream.getvalue().strip()
    assert "DEBUG" in line
    assert "[rid-2] hello" in line
    assert line.endswith("route=/ping")
