"""HMAC signing of messages: what a worker with keys accepts and refuses."""

from __future__ import annotations

import pytest

from hubbub import ConfigurationError, Hub, MessageError
from hubbub.codecs import get_codec
from hubbub.message import Envelope, decode, encode, peek_id
from hubbub.settings import resolve
from hubbub.signing import Signer

JSON = get_codec("json")
K1 = "k1-secret-0123456789"
K0 = "k0-secret-0123456789"


def test_a_signed_message_round_trips_and_any_known_key_verifies() -> None:
    old, new = Signer({"k0": K0}), Signer({"k1": K1, "k0": K0})
    env = Envelope("t", (1,))
    assert decode(encode(env, JSON, signer=old), signer=new).args == (1,)
    assert decode(encode(env, JSON, signer=new), signer=new).id == env.id


def test_a_worker_with_keys_refuses_unsigned_messages() -> None:
    with pytest.raises(MessageError, match="unsigned message refused"):
        decode(encode(Envelope("t"), JSON), signer=Signer({"k1": K1}))


def test_a_tampered_message_is_refused() -> None:
    data = encode(Envelope("t", (1,)), JSON, signer=Signer({"k1": K1}))
    forged = data.replace(b"[1]", b"[2]")
    with pytest.raises(MessageError, match="bad signature"):
        decode(forged, signer=Signer({"k1": K1}))


def test_a_message_signed_with_another_secret_or_unknown_key_is_refused() -> None:
    data = encode(Envelope("t"), JSON, signer=Signer({"k1": "another-secret-0123456"}))
    with pytest.raises(MessageError, match="bad signature"):
        decode(data, signer=Signer({"k1": K1}))
    with pytest.raises(MessageError, match="unknown key id 'k1'"):
        decode(data, signer=Signer({"k9": K1}))


def test_a_signed_message_at_a_worker_without_keys_says_so() -> None:
    data = encode(Envelope("t"), JSON, signer=Signer({"k1": K1}))
    with pytest.raises(MessageError, match="no signing keys"):
        decode(data)
    assert peek_id(data) is not None


def test_short_secrets_and_bad_key_ids_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="shorter than 16 bytes"):
        Signer({"k1": "short"})
    with pytest.raises(ConfigurationError, match="key id"):
        Signer({"bad id": K1})


def test_pickle_is_refused_without_signing_and_allowed_with_it() -> None:
    with pytest.raises(ConfigurationError, match="only allowed with signed messages"):
        Hub("memory://sign-a", serializer="pickle")
    with pytest.raises(ConfigurationError, match="only allowed with signed messages"):
        Hub("memory://sign-b", accept=["json", "pickle"])
    hub = Hub("memory://sign-c", serializer="pickle", signing_keys={"k1": K1})
    assert hub.signer is not None
    hub.close()


def test_signing_keys_come_from_the_environment_and_never_show() -> None:
    settings = resolve({}, environ={"HUBBUB_SIGNING_KEYS": f"k1:{K1},k0:{K0}"})
    assert settings.signing_keys == (("k1", K1), ("k0", K0))
    assert K1 not in repr(settings)
    assert K1 not in repr(Signer(dict(settings.signing_keys)))
    with pytest.raises(ConfigurationError) as info:
        resolve({}, environ={"HUBBUB_SIGNING_KEYS": "nocolon-secret-value"})
    assert "nocolon" not in str(info.value)
