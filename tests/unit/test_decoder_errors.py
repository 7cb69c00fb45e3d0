"""Decoding errors: counted once, and the CodecError keeps the cause its codec gave it."""

from __future__ import annotations

import pytest

from easymesh.decoder import Decoder
from easymesh.errors import CodecError
from tests.strict_codec import StrictCodec


def test_a_codec_error_from_the_codec_is_raised_as_it_is() -> None:
    """Decoder.decode used to set a CodecError's cause to itself (``raise e from e``): the
    codec's own cause was lost (a ServiceError named ``CodecError`` instead of the real
    reason, for request_future but not request) and the chain became a cycle."""
    decoder = Decoder(StrictCodec(200))
    with pytest.raises(CodecError) as info:
        decoder.decode(200, b"x")
    assert info.value.__cause__ is not info.value
    assert type(info.value.__cause__) is ValueError
    assert decoder.errors.value == 1


def test_a_refused_codec_is_a_codec_error_with_no_cause() -> None:
    decoder = Decoder("msgpack")
    with pytest.raises(CodecError, match="not accepted") as info:
        decoder.decode(1, b"x")  # pickle: refused by a msgpack node
    assert info.value.__cause__ is None
    assert decoder.errors.value == 1


def test_another_error_becomes_a_codec_error_caused_by_it() -> None:
    decoder = Decoder("pickle")
    with pytest.raises(CodecError, match="cannot decode a message") as info:
        decoder.decode(1, b"not a pickle")
    assert info.value.__cause__ is not None and type(info.value.__cause__) is not CodecError
    assert decoder.errors.value == 1
