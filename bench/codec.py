"""Codec speed: microseconds per encode and decode of a 160-character submit_sm and of a deliver_sm
receipt, ours beside smpplib's for the same PDUs, measured in the same run.

    python bench/codec.py [--number N]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import smpplib.smpp

from smppd.pdu.codec import decode, encode
from smppd.pdu.pdus import DeliverSm, SubmitSm
from smppd.pdu.tlv import Tag, Tlv

TEXT = ("The quick brown fox jumps over the lazy dog. " * 4)[:160].encode("ascii")
RECEIPT = (
    b"id:1A2B3C4D sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
    b"stat:DELIVRD err:000 text:The quick brown fox"
)


class _Seq:
    def next_sequence(self) -> int:
        return 1


def per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000)
    n = parser.parse_args().number

    submit = SubmitSm(
        sequence_number=1,
        source_addr_ton=5,
        source_addr="SMPPD",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447911123456",
        registered_delivery=1,
        short_message=TEXT,
    )
    receipt = DeliverSm(
        sequence_number=2,
        source_addr="447911123456",
        destination_addr="SMPPD",
        esm_class=0x04,
        short_message=RECEIPT,
        tlvs=(Tlv.of_str(Tag.receipted_message_id, "1A2B3C4D"), Tlv.of_int(Tag.message_state, 2)),
    )
    seq = _Seq()
    their_submit = smpplib.smpp.make_pdu(
        "submit_sm",
        client=seq,
        source_addr_ton=5,
        source_addr="SMPPD",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447911123456",
        registered_delivery=1,
        short_message=TEXT,
    )
    their_receipt = smpplib.smpp.make_pdu(
        "deliver_sm",
        client=seq,
        source_addr="447911123456",
        destination_addr="SMPPD",
        esm_class=0x04,
        short_message=RECEIPT,
        receipted_message_id="1A2B3C4D",
        message_state=2,
    )
    rows = []
    for name, ours, theirs in (
        ("submit_sm (160 chars)", submit, their_submit),
        ("deliver_sm receipt", receipt, their_receipt),
    ):
        wire = encode(ours)
        assert decode(wire) == ours
        enc = per_call_us(lambda p=ours: encode(p), n)  # type: ignore[misc]
        dec = per_call_us(lambda w=wire: decode(w), n)  # type: ignore[misc]
        their_wire = theirs.generate()
        t_enc = per_call_us(theirs.generate, max(n // 10, 100))
        t_dec = per_call_us(
            lambda w=their_wire: smpplib.smpp.parse_pdu(w, client=seq),  # type: ignore[misc]
            max(n // 10, 100),
        )
        rows.append((name, enc, dec, t_enc, t_dec))
    print(f"{'pdu':24} {'encode us':>10} {'decode us':>10} {'smpplib enc':>12} {'smpplib dec':>12}")
    for name, enc, dec, t_enc, t_dec in rows:
        print(f"{name:24} {enc:10.2f} {dec:10.2f} {t_enc:12.2f} {t_dec:12.2f}")
        print(f"{'':24} {'':10} {'':10} {t_enc / enc:11.0f}x {t_dec / dec:11.0f}x")


if __name__ == "__main__":
    main()
