"""Pure SMPP v3.4 codec: PDUs, TLVs, statuses, text, segmentation and receipts. No I/O."""
