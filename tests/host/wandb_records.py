"""A minimal reader for offline ``.wandb`` files (wandb 0.31 ships none).

The file is a 7-byte ``:W&B`` header, then 32 KiB blocks of LevelDB-log-framed chunks:
a 7-byte chunk header ``<IHB`` (crc, length, type: 1 full, 2 first, 3 middle, 4 last),
whose payloads concatenate to serialized ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_BLOCK = 32 * 1024
_HEADER = 7


def read_records(path: Path) -> list:
  data = Path(path).read_bytes()
  pos, records, pending = _HEADER, [], b""
  while pos + _HEADER <= len(data):
    left_in_block = _BLOCK - (pos % _BLOCK)
    if left_in_block < _HEADER:  # block trailer padding
      pos += left_in_block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
    payload = data[pos + _HEADER:pos + _HEADER + length]
    pos += _HEADER + length
    if kind == 0 and length == 0:
      continue
    pending += payload
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
      pending = b""
  return records


def history_and_summary(path: Path) -> tuple[list[dict], dict, dict]:
  """``(history rows, summary, run info)`` of one offline run file."""
  rows, summary, info = [], {}, {}
  for record in read_records(path):
    kind = record.WhichOneof("record_type")
    if kind == "history":
      rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                   for item in record.history.item})
    elif kind == "summary":
      for item in record.summary.update:
        summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    elif kind == "run":
      info = {"name": record.run.display_name, "group": record.run.run_group,
              "job_type": record.run.job_type}
  return rows, summary, info
