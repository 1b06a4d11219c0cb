"""RabbitMQ's direct path over TLS: ``delay()`` from plain threads on an ``amqps://`` URL
shares one py-amqp connection whose reads and writes take turns (``Pipe._io``) and whose
reader thread runs ``_read_tls``; what it sends arrives once and whole, and its failures
are the plain path's.

The shared RabbitMQ on 127.0.0.1:5672 speaks plain AMQP, so each test makes a throwaway CA
and a server certificate for 127.0.0.1 and localhost, and puts a ``Proxy`` that ends TLS
(the front) before a plain one that cuts and stalls (client -TLS-> front -> proxy ->
RabbitMQ). The client trusts the CA the way a deployment would, with no TLS
option in the URL (which would keep sync sends on the loop, ``direct()``): through
``SSL_CERT_FILE``, which OpenSSL's default verify paths honour. An unreachable broker skips
locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import amqp  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubbub import Hub, TransportUnavailable
from hubbub.task import Task
from hubbub.transports import Outgoing
from hubbub.transports._amqp_pipe import Pipe
from tests.brokers import amqp as server
from tests.faults.proxy import Proxy
from tests.transports.test_amqp_sync import (  # helpers shared with the plain-TCP tests
    fetch,
    in_threads,
    in_threads_later,
    one_write,
    only_the_unroutable_fails,
    prefix,
    sync_publisher,
    wait_until,
)

__all__ = ["prefix"]  # a fixture, imported to be used here


def certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA, written as PEM for ``SSL_CERT_FILE``, and a server context holding a
    certificate it signed for IP 127.0.0.1 and DNS localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubbub test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server side of TLS, signed by a CA that a client's default context trusts."""
    ca, context = certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    return context


@pytest.fixture
def proxy(prefix: str) -> Iterator[Proxy]:
    """Plain TCP to the shared RabbitMQ, to cut or stall (``prefix`` checked it is up)."""
    with Proxy(server.server()) as p:
        yield p


@pytest.fixture
def front(proxy: Proxy, tls: ssl.SSLContext) -> Iterator[Proxy]:
    with Proxy(("127.0.0.1", proxy.port), tls=tls) as f:
        yield f


@pytest.fixture
def hub(prefix: str, front: Proxy) -> Iterator[Hub]:
    """A hub on ``amqps://`` through the TLS front, with no TLS option in its URL."""
    h = Hub(f"amqps://guest:guest@127.0.0.1:{front.port}/?prefix={prefix}&connect_timeout=1",
            results="none")
    try:
        yield h
    finally:
        h.close()


def nothing() -> None:
    """The task every test sends."""


def noop_task(hub: Hub) -> Task[[], None]:
    return hub.task(name="noop")(nothing)


def tls_pipe(hub: Hub) -> Pipe:
    """The sync publisher's connection, checked to be on the TLS path: an SSL socket, reads
    and writes taking turns, and its reader thread inside ``_read_tls``."""
    pipe = sync_publisher(hub)._pipe
    assert pipe is not None
    assert isinstance(pipe.conn.transport.sock, ssl.SSLSocket)
    assert pipe._io is not None
    assert pipe._reader.ident is not None
    frame = sys._current_frames().get(pipe._reader.ident)
    running = set()
    while frame is not None:
        running.add(frame.f_code.co_name)
        frame = frame.f_back
    assert "_read_tls" in running, running
    return pipe


def test_the_default_ssl_context_trusts_the_throwaway_ca_through_ssl_cert_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca, context = certificates(tmp_path)
    with Proxy(server.server(), tls=context) as f:  # the handshake needs no broker

        def handshake(host: str) -> None:
            with socket.create_connection(("127.0.0.1", f.port), timeout=10) as raw, \
                    ssl.create_default_context().wrap_socket(raw, server_hostname=host):
                pass

        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake("127.0.0.1")  # the system's trust store does not know the CA
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        handshake("127.0.0.1")
        handshake("localhost")
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            handshake("broker.example")  # and host names are checked


def test_threads_delaying_over_amqps_each_arrive_once_and_the_tls_reader_ends_with_the_hub(
        hub: Hub, front: Proxy) -> None:
    noop = noop_task(hub)
    first = noop.delay().id  # connects: the loop's connection and the pipe, both over TLS
    pipe = tls_pipe(hub)
    sent: list[str] = [first]
    lock = threading.Lock()

    def send() -> None:
        for _ in range(20):
            ident = noop.delay().id  # returns once the TLS reader read its confirm
            with lock:
                sent.append(ident)

    assert in_threads([send] * 8) == [None] * 8
    assert sync_publisher(hub)._pipe is pipe  # one connection for every thread
    assert pipe._tag == 161
    got = fetch(hub, n=161, wait=30)
    assert sorted(d.id for d in got) == sorted(sent)
    assert fetch(hub, wait=0.5) == []  # nothing twice
    assert len(front.handshakes) == 2
    assert all(v.startswith("TLS") for v in front.handshakes)
    hub.close()
    assert not pipe._reader.is_alive()
    assert not pipe.conn.connected


def test_a_message_spanning_many_tls_records_arrives_intact(hub: Hub) -> None:
    noop_task(hub).delay()
    fetch(hub)
    publisher = sync_publisher(hub)
    pipe = tls_pipe(hub)
    # A TLS record holds 16 KiB and a frame 128 KiB: each big body is many of both,
    # written while small messages from other threads take their turns on the socket.
    bodies = {f"id-big-{i}": os.urandom(1_500_000) for i in range(3)}
    bodies |= {f"id-small-{i}": b"small %d" % i for i in range(8)}
    assert in_threads([functools.partial(publisher.publish, [Outgoing("default", body, ident)])
                       for ident, body in bodies.items()]) == [None] * len(bodies)
    got = fetch(hub, n=len(bodies), wait=30)
    assert {d.id: d.body for d in got} == bodies
    assert sync_publisher(hub)._pipe is pipe


def test_an_unroutable_message_over_tls_fails_only_its_own_sender(hub: Hub,
                                                                  prefix: str) -> None:
    # The returned message comes back whole, in many records the reader reads in turns.
    only_the_unroutable_fails(hub, prefix, noop_task(hub), lambda: tls_pipe(hub),
                              returned_body=os.urandom(600_000))


def test_a_connection_cut_over_tls_fails_each_waiting_sender_and_the_next_send_reconnects(
        hub: Hub, proxy: Proxy, front: Proxy) -> None:
    noop = noop_task(hub)
    noop.delay()
    publisher = sync_publisher(hub)
    pipe = tls_pipe(hub)
    handshakes = len(front.handshakes)
    proxy.stall()  # what is written now is neither confirmed nor refused
    with one_write(pipe, 8):
        sends = in_threads_later([noop.delay] * 8)
    wait_until(lambda: pipe._tag == 9)  # the warm-up's tag was 1
    proxy.cut()  # behind the TLS front: the front ends the client's side too
    outcomes = sends()
    assert all(isinstance(o, TransportUnavailable) for o in outcomes), outcomes
    assert all(re.search(r"RabbitMQ.*127\.0\.0\.1:\d+", str(o)) for o in outcomes)
    wait_until(lambda: not pipe._reader.is_alive())
    proxy.restore()
    noop.delay()  # on a new connection, through the front again
    assert publisher._pipe is not pipe
    tls_pipe(hub)
    assert len(front.handshakes) > handshakes


def test_a_nack_read_by_the_tls_reader_fails_its_sender_and_the_next_send_reconnects(
        hub: Hub, prefix: str) -> None:
    noop = noop_task(hub)
    noop.delay()
    publisher = sync_publisher(hub)
    pipe = tls_pipe(hub)
    full = f"{prefix}.full"  # takes nothing: RabbitMQ nacks what is published to it

    async def declare(*, delete: bool) -> None:
        async with await aio_pika.connect(server.make_url(Path(), prefix)) as conn:
            channel = await conn.channel()
            if delete:
                await channel.queue_delete(full)
            else:
                await channel.declare_queue(full, arguments={"x-max-length": 0,
                                                             "x-overflow": "reject-publish"})

    asyncio.run(declare(delete=False))
    try:
        with pytest.raises(TransportUnavailable, match=r"refused \(nack\)"):
            pipe.send("", full, amqp.Message(b"x", message_id="id-full"))
        # The reader took the nack holding the turn lock, and closed the connection from
        # there: it must not wait for the lock it holds.
        wait_until(lambda: not pipe._reader.is_alive())
        done = threading.Thread(target=noop.delay)  # retires the nacked connection
        done.start()
        done.join(10)
        assert not done.is_alive(), "the next send hung on the nacked connection"
        assert publisher._pipe is not pipe
        tls_pipe(hub)
        assert len(fetch(hub, n=2)) == 2
    finally:
        asyncio.run(declare(delete=True))


def test_a_tls_broker_that_stops_answering_fails_a_sync_delay_within_its_timeout(
        prefix: str, proxy: Proxy, front: Proxy) -> None:
    hub = Hub(f"amqps://guest:guest@127.0.0.1:{front.port}/?prefix={prefix}&publish_timeout=1",
              results="none")
    noop = noop_task(hub)
    try:
        noop.delay()
        pipe = tls_pipe(hub)
        proxy.stall()
        with pytest.raises(TransportUnavailable, match="within 1s"):
            noop.delay()  # aborts the connection while its reader waits for data
        wait_until(lambda: not pipe._reader.is_alive())
        proxy.restore()
        noop.delay()
        assert sync_publisher(hub)._pipe is not pipe
    finally:
        hub.close()
