"""`python -m tools.fake_smsc.ctl`: one control request from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tools.fake_smsc import FakeSmsc, SmscConfig
from tools.fake_smsc.ctl import main, request_of


def test_text_stays_text_and_json_is_asked_for() -> None:
    """A number meant as an address stays a string; `:=` gives JSON values."""
    request = request_of(
        "set", ["source=447700900123", "latency_s:=0.5", 'receipts:={"delay_s": 2}']
    )
    assert request == {
        "op": "set",
        "id": 1,
        "source": "447700900123",
        "latency_s": 0.5,
        "receipts": {"delay_s": 2},
    }
    with pytest.raises(ValueError, match="not JSON"):
        request_of("set", ["latency_s:=fast"])
    with pytest.raises(ValueError, match="KEY=TEXT"):
        request_of("set", ["latency_s"])


async def test_a_request_is_answered_and_the_status_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ctl.sock"
    async with FakeSmsc(SmscConfig(port=0, control=str(path))) as smsc:
        assert await asyncio.to_thread(main, [str(path), "set", "latency_s:=0.25"]) == 0
        assert smsc.faults.latency_s == 0.25
        assert json.loads(capsys.readouterr().out)["faults"]["latency_s"] == 0.25
        assert await asyncio.to_thread(main, [str(path), "launch"]) == 1
        assert json.loads(capsys.readouterr().out)["error"]["code"] == "unknown_op"
    assert await asyncio.to_thread(main, [str(path), "stats"]) == 69
    assert capsys.readouterr().err.startswith(f"error: no answer from {path}")
