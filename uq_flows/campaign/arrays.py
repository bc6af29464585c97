"""Pack ragged per-structure arrays into one chunk of bytes (``.npz``, no pickle) and back."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np


def pack(ids: Sequence[str], arrays: Mapping[str, Sequence[np.ndarray | None]]) -> bytes:
    """``ids`` and, per name, one array (or None) per structure, concatenated along axis 0 with offsets."""
    payload = {"ids": np.asarray(list(ids), dtype=str)}
    for name, values in arrays.items():
        if len(values) != len(ids):
            raise ValueError(f"{name}: {len(values)} arrays for {len(ids)} structures")
        present = [v is not None for v in values]
        shaped = [np.asarray(v) for v in values if v is not None]
        lengths = [len(v) if v.ndim else 1 for v in shaped]
        payload[f"{name}.present"] = np.asarray(present, dtype=bool)
        payload[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        payload[f"{name}.values"] = np.concatenate([np.atleast_1d(v) for v in shaped]) if shaped else np.zeros(0)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[list[str], dict[str, list[np.ndarray | None]]]:
    """The ids and per-structure arrays ``pack`` wrote."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        ids = [str(i) for i in npz["ids"]]
        names = sorted({key.rsplit(".", 1)[0] for key in npz.files if key != "ids"})
        arrays = {}
        for name in names:
            present, offsets, values = npz[f"{name}.present"], npz[f"{name}.offsets"], npz[f"{name}.values"]
            out, k = [], 0
            for flag in present:
                if flag:
                    out.append(values[offsets[k]:offsets[k + 1]])
                    k += 1
                else:
                    out.append(None)
            arrays[name] = out
    return ids, arrays
