"""`python -m tools.fake_smsc.ctl`: one control request from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from smppd.pdu.pdus import SubmitSm, SubmitSmResp
from tools.fake_smsc import EsmeClient, FakeSmsc, SmscConfig, ctl
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


async def test_a_request_that_waits_is_given_its_own_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_for with a timeout longer than the client's own wait for an answer: the fake's
    answer (timeout, exit 1) is waited for, not given up as "no answer" (69)."""
    monkeypatch.setattr(ctl, "_ANSWER_S", 0.2)
    path = tmp_path / "ctl.sock"
    async with FakeSmsc(SmscConfig(port=0, control=str(path))):
        status = await asyncio.to_thread(main, [str(path), "wait_for", "count:=1", "timeout:=0.5"])
    assert status == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "timeout"


async def test_a_reply_longer_than_64_kib_is_read_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page of 600 records, well over asyncio's default line limit, is printed in full."""
    path = tmp_path / "ctl.sock"
    async with FakeSmsc(SmscConfig(port=0, control=str(path))) as smsc:
        async with await EsmeClient.connect(smsc.host, smsc.port) as client:
            assert (await client.bind()).command_status == 0
            for n in range(600):
                client.send(SubmitSm(destination_addr=f"4477009{n:05d}", short_message=b"hello"))
            for _ in range(600):
                assert (await client.expect(SubmitSmResp)).command_status == 0
        assert await asyncio.to_thread(main, [str(path), "records"]) == 0
        out = capsys.readouterr().out
        assert len(out) > 1 << 16
        page = json.loads(out)
        assert page["total"] == 600
        assert page["items"][-1]["destination"] == "447700900599"
