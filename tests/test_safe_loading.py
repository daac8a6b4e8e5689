"""Loading runs no code: tensor files without pickle, checkpoints weights-only, refusals named."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from multibeta.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from multibeta.utils.seeding import rng_state, set_rng_state
from multibeta.utils.tensorfile import (
    META_KEY, TensorFileError, read_header, read_tensor_file, split_state, write_tensor_file,
)

SRC = Path(__file__).resolve().parents[1] / "src"


class Payload:
    """Pickles to a call of os.system that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_full_unpickling_anywhere_in_the_package() -> None:
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if "weights_only=False" in line.replace(" ", "")]
    assert hits == []


def test_a_tensor_file_round_trips_nested_state(tmp_path: Path) -> None:
    state = {"kind": "x", "arch": {"widths": (2, 3), "name": "n", "none": None}, "step": 4,
             "ema": {"a.weight": torch.randn(2, 3), "b": torch.arange(3, dtype=torch.float64)},
             "half": torch.ones(2, dtype=torch.bfloat16), "table": np.linspace(0, 1, 5),
             "rate": np.float32(0.5), "summary": {"loss": float("nan")}}
    write_tensor_file(state, tmp_path / "s.safetensors")
    back = read_tensor_file(tmp_path / "s.safetensors")
    assert back["arch"] == {"widths": [2, 3], "name": "n", "none": None} and back["step"] == 4
    assert torch.equal(back["ema"]["a.weight"], state["ema"]["a.weight"])
    assert back["ema"]["b"].dtype == torch.float64 and back["half"].dtype == torch.bfloat16
    assert torch.equal(back["table"], torch.from_numpy(state["table"])) and back["rate"] == 0.5
    assert np.isnan(back["summary"]["loss"])
    with pytest.raises(TypeError, match=r"arch/fn: a builtin_function_or_method cannot be stored"):
        split_state({"arch": {"fn": len}})
    with pytest.raises(TypeError, match=r"keys must be non-empty strings without '/'"):
        split_state({"a/b": 1})


def _header_file(path: Path, header: dict, payload: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        ({"__metadata__": {META_KEY: "{}", "code": "__import__('os').system('touch m')"}}, b"",
         r"metadata must hold exactly the key 'multibeta'.*\['code', 'multibeta'\]"),
        ({"__metadata__": {META_KEY: "{}"}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
         b"\0" * 8, r"describes 16 bytes of tensors but the file holds 8"),
        ({"__metadata__": {META_KEY: "{}"}, "w": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}},
         b"\0" * 8, r"tensor 'w': dtype 'O' is not one of"),
        ({"__metadata__": {META_KEY: "{}"}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
         b"\0" * 4, r"data_offsets \[0, 4\] do not hold F32 of shape \[2\]"),
        ({"__metadata__": {META_KEY: "[1]"}}, b"", r"'multibeta' metadata is not a JSON object"),
        ([1, 2], b"", r"header is not a JSON object"),
    ],
)
def test_a_crafted_header_is_refused(tmp_path: Path, header, payload: bytes, reason: str) -> None:
    path = _header_file(tmp_path / "x.safetensors", header, payload)
    with pytest.raises(TensorFileError, match=reason) as err:
        read_tensor_file(path)
    assert str(path) in str(err.value)


def test_a_pickle_or_a_huge_header_length_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.safetensors"
    torch.save({"p": Payload(marker)}, evil)
    with pytest.raises(TensorFileError, match=r"evil\.safetensors: not a safetensors file"):
        read_tensor_file(evil)
    evil.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(TensorFileError, match=r"header length field says 1099511627776 bytes"):
        read_header(evil)
    with pytest.raises(CheckpointError, match=r"evil\.safetensors: not a safetensors file"):
        load_checkpoint(evil, kind="vae")
    assert not marker.exists()


def test_checkpoints_are_plain_data_and_load_weights_only(tmp_path: Path) -> None:
    np.random.seed(1)
    state = {"kind": "toy", "arch": {}, "rng": rng_state(), "norm": {"mean": np.arange(3.0)},
             "acc": np.float64(2.5), "t": np.linspace(0, 1, 3)}
    save_checkpoint(state, tmp_path / "c.pt")
    plain = torch.load(tmp_path / "c.pt", weights_only=True)  # no allow-listing needed
    assert torch.equal(plain["norm"]["mean"], torch.arange(3.0, dtype=torch.float64))
    assert plain["acc"] == 2.5 and isinstance(plain["acc"], float)
    expected = np.random.rand(3)
    set_rng_state(load_checkpoint(tmp_path / "c.pt", kind="toy")["rng"])
    assert np.array_equal(np.random.rand(3), expected)  # the numpy RNG resumes exactly


def test_an_older_checkpoint_with_numpy_arrays_still_loads(tmp_path: Path) -> None:
    torch.save({"kind": "toy", "arch": {}, "t": np.linspace(0, 1, 3), "rng": np.random.get_state(),
                "x": np.float32(1.5)}, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt", kind="toy")
    assert isinstance(state["t"], np.ndarray) and state["x"] == 1.5
    torch.save({"kind": "toy", "arch": {}, "o": np.array([1, "a"], dtype=object)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match=r"obj\.pt holds objects that a weights-only load refuses.*ObjectDType"):
        load_checkpoint(tmp_path / "obj.pt", kind="toy")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"kind": "vae", "arch": {}, "p": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "model.pt", kind="vae")
    message = str(err.value)
    assert "model.pt holds objects that a weights-only load refuses" in message
    assert "system" in message and "rerun the rule that produces it" in message
    assert not marker.exists()


def test_a_tensor_file_keeps_the_strides_of_a_transposed_tensor(tmp_path: Path) -> None:
    a = torch.randn(4, 4, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.T + torch.eye(4, dtype=torch.float64))  # column-major
    assert not tril.is_contiguous()
    write_tensor_file({"tril": tril, "flat": torch.arange(3)}, tmp_path / "t.safetensors")
    back = read_tensor_file(tmp_path / "t.safetensors")
    assert torch.equal(back["tril"], tril) and back["tril"].stride() == tril.stride()
    assert "__layout__" not in back
