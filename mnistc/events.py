"""TensorBoard event files for scalar summaries, written without TensorFlow.

An event file is a TFRecord stream of serialized ``tensorflow.Event`` protocol buffers.
mnistc only ever logs scalars, so the few protobuf fields that takes are encoded here by
hand. This replaces tensorboardX, whose import pulls in PyTorch when it is installed
(1.5 s and 200 MB before the first step); the files are read back by TensorBoard's
own ``EventAccumulator`` in the tests.

Record framing (TFRecord): ``uint64 length``, ``uint32 masked_crc32c(length)``,
``data``, ``uint32 masked_crc32c(data)``, all little-endian.
"""

import contextlib
import itertools
import math
import os
import struct
import time

FILE_VERSION = b"brain.Event:2"

# Protobuf field numbers, from tensorflow/core/util/event.proto and summary.proto.
_EVENT_WALL_TIME, _EVENT_STEP, _EVENT_FILE_VERSION = 1, 2, 3
_EVENT_SUMMARY, _EVENT_SESSION_LOG = 5, 7
_SUMMARY_VALUE, _VALUE_TAG, _VALUE_SIMPLE_VALUE = 1, 1, 2
_SESSION_LOG_STATUS, _SESSION_LOG_START = 1, 1

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of ``data``; records are tens of bytes, so a table is enough."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 is encoded as its two's complement
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field, wire_type):
    return _varint(field << 3 | wire_type)


def _bytes_field(field, payload):
    return _key(field, _WIRE_BYTES) + _varint(len(payload)) + payload


def _event(step, body):
    return (
        _key(_EVENT_WALL_TIME, _WIRE_FIXED64)
        + struct.pack("<d", time.time())
        + _key(_EVENT_STEP, _WIRE_VARINT)
        + _varint(step)
        + body
    )


def tfrecord(data):
    """One TFRecord: the framing TensorBoard's reader checks, around ``data``."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


_file_serial = itertools.count()


class EventWriter:
    """Appends scalar events to a new ``events.out.tfevents.*`` file in ``log_dir``.

    ``purge_step`` (a resumed run's first step) writes a SessionLog START at that step
    first: TensorBoard then hides the events earlier files logged at or after it, the
    steps a killed run logged past its last checkpoint. Every record is flushed, so a
    kill loses at most the record being written, which TensorBoard's reader skips.
    """

    def __init__(self, log_dir, purge_step=None):
        import socket  # for the host name only; 3 ms of import that inference need not pay

        name = "events.out.tfevents.{:010d}.{}.{}.{}".format(
            int(time.time()), socket.gethostname(), os.getpid(), next(_file_serial)
        )
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "xb")
        try:
            self._write(_event(0, _bytes_field(_EVENT_FILE_VERSION, FILE_VERSION)))
            if purge_step is not None:
                session_log = _key(_SESSION_LOG_STATUS, _WIRE_VARINT) + _varint(_SESSION_LOG_START)
                self._write(_event(purge_step, _bytes_field(_EVENT_SESSION_LOG, session_log)))
        except OSError:  # e.g. a full disk: leave no headless file behind
            with contextlib.suppress(OSError):
                self._file.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise

    def _write(self, event):
        self._file.write(tfrecord(event))
        self._file.flush()

    def add_scalar(self, tag, value, step):
        """Log ``value`` (stored as float32, as TensorBoard does) under ``tag`` at ``step``."""
        try:
            as_float32 = struct.pack("<f", value)
        except OverflowError:  # beyond float32's range: round to infinity, as a cast does
            as_float32 = struct.pack("<f", math.copysign(math.inf, value))
        value_msg = (
            _bytes_field(_VALUE_TAG, tag.encode("utf-8"))
            + _key(_VALUE_SIMPLE_VALUE, _WIRE_FIXED32)
            + as_float32
        )
        summary = _bytes_field(_SUMMARY_VALUE, value_msg)
        self._write(_event(step, _bytes_field(_EVENT_SUMMARY, summary)))

    def close(self):
        self._file.close()
