"""`alpkd.model_files.read_safetensors_header`, the one reader of a .safetensors header (the teacher-folder check
in `config` and the checkpoint check in `trainer` both use it), against files written by safetensors itself."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from alpkd.model_files import SafetensorsHeaderError, _classifier_outputs, read_safetensors_header
from alpkd.trainer import safetensors_damage

TENSORS = {"bert.embeddings.weight": torch.zeros(3, 4, dtype=torch.float32),
           "classifier.weight": torch.ones(2, 8, dtype=torch.float16)}
DATA_BYTES = 3 * 4 * 4 + 2 * 8 * 2  # float32 and float16 elements


def test_header_of_a_file_written_by_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(TENSORS, str(path), metadata={"format": "pt"})
    header, start = read_safetensors_header(path)
    assert header["__metadata__"] == {"format": "pt"}
    assert header["bert.embeddings.weight"]["shape"] == [3, 4] and header["bert.embeddings.weight"]["dtype"] == "F32"
    assert header["classifier.weight"]["shape"] == [2, 8] and header["classifier.weight"]["dtype"] == "F16"
    # the tensors fill the file from `start` to its end (the format's layout, counted here by hand)
    assert start == path.stat().st_size - DATA_BYTES
    assert max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__") == DATA_BYTES
    assert start == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    # its two users
    assert _classifier_outputs(path) == 2
    assert safetensors_damage(path) is None


def test_damaged_files(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(TENSORS, str(path))
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])  # one byte of a tensor missing: the header still reads
    assert read_safetensors_header(path)[1] == len(whole) - DATA_BYTES
    assert safetensors_damage(path) == f"truncated: {len(whole) - 1} bytes of {len(whole)}"
    path.write_bytes(whole[:5])
    with pytest.raises(SafetensorsHeaderError, match="5 bytes, no header"):
        read_safetensors_header(path)
    path.write_bytes(whole[:20])
    n = struct.unpack("<Q", whole[:8])[0]
    assert safetensors_damage(path) == f"20 bytes, its header alone needs {n + 8}"
    assert _classifier_outputs(path) is None
    listed = json.dumps([1, 2]).encode()
    path.write_bytes(struct.pack("<Q", len(listed)) + listed)
    assert safetensors_damage(path) == "the header is a JSON list, not an object"
    path.write_bytes(struct.pack("<Q", 3) + b"{x}")
    assert safetensors_damage(path) == "unreadable header: JSONDecodeError"
    assert _classifier_outputs(path) is None
