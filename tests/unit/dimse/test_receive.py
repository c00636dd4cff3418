"""Messages assembled by ``receive.py`` equal pynetdicom's own decoding of the same PDUs."""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pytest
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_MOVE_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_MOVE, C_STORE
from pynetdicom.pdu import P_DATA_TF

from dicomvault.dimse.receive import ViewDimseProvider, decode_command, pdata_from_pdu

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
ATTRIBUTES = ("MessageID", "MessageIDBeingRespondedTo", "AffectedSOPClassUID",
              "AffectedSOPInstanceUID", "Priority", "MoveOriginatorApplicationEntityTitle",
              "MoveOriginatorMessageID", "Status", "MoveDestination", "_context_id")


def _store(uid: str = "1.2.3.4.5.6.7.8.9", data: bytes = b"\x08\x00\x16\x00" + bytes(60),
           originator: str | None = None) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = uid
    primitive.Priority = 2
    if originator is not None:
        primitive.MoveOriginatorApplicationEntityTitle = originator
        primitive.MoveOriginatorMessageID = 99
    primitive.DataSet = BytesIO(data)
    return primitive


def _find() -> C_FIND:
    primitive = C_FIND()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = STUDY_FIND
    primitive.Priority = 0
    primitive.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    return primitive


def _echo() -> C_ECHO:
    primitive = C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return primitive


def _move() -> C_MOVE:
    primitive = C_MOVE()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Priority = 2
    primitive.MoveDestination = "DEST"
    primitive.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    return primitive


def _store_rsp() -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3"
    primitive.Status = 0
    return primitive


MESSAGES = {"echo": (C_ECHO_RQ, _echo), "store": (C_STORE_RQ, _store), "find": (C_FIND_RQ, _find),
            "store-move-originator": (C_STORE_RQ, lambda: _store(originator="MOVER")),
            "store-large": (C_STORE_RQ, lambda: _store(data=bytes(range(256)) * 4000)),
            "move": (C_MOVE_RQ, _move), "store-rsp": (C_STORE_RSP, _store_rsp)}


@pytest.fixture(autouse=True)
def _server_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``dimse/server.py`` configures pynetdicom: no logging handlers on DIMSE events."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


def _pdus(message_class: Any, primitive: Any, max_pdu: int, context_id: int = 3) -> list[bytearray]:
    """The P-DATA-TF PDUs pynetdicom sends for ``primitive``, as received (header included)."""
    message = message_class()
    message.primitive_to_message(primitive)
    return [bytearray(P_DATA_TF(pdata).encode())
            for pdata in message.encode_msg(context_id, max_pdu)]


def _association() -> Association:
    return Association(AE(), "acceptor")


HANDED_OVER: list[int] = []


def _received(provider_class: type[DIMSEServiceProvider], pdus: list[bytearray],
              *, views: bool) -> tuple[list[tuple[int, Any]], list[str]]:
    """Queued messages and DUL events after feeding ``pdus`` to a fresh provider
    (``HANDED_OVER`` then holds how many messages the view provider left to pynetdicom)."""
    assoc = _association()
    provider = DIMSEServiceProvider(assoc)
    HANDED_OVER.clear()
    if provider_class is ViewDimseProvider:
        ViewDimseProvider.install(provider)
        hand_over = provider._hand_over  # type: ignore[attr-defined]

        def counted() -> None:
            HANDED_OVER.append(1)
            hand_over()

        provider._hand_over = counted  # type: ignore[attr-defined]
    for raw in pdus:
        if views:
            pdu = pdata_from_pdu(raw)
            assert pdu is not None
        else:
            pdu = P_DATA_TF()
            pdu.decode(bytes(raw))
        provider.receive_primitive(pdu.to_primitive())
    queued = list(provider.msg_queue.queue)
    events = list(assoc.dul.event_queue.queue)
    return queued, events


def _summary(item: tuple[int, Any]) -> tuple[Any, ...]:
    context_id, primitive = item
    values = tuple((name, getattr(primitive, name, None)) for name in ATTRIBUTES)
    data = None
    for attribute in ("DataSet", "Identifier"):
        stream = getattr(primitive, attribute, None)
        if stream is not None:
            data = stream.getvalue()
    return context_id, type(primitive).__name__, values, data, primitive.is_valid_request


@pytest.mark.parametrize("max_pdu", [0, 16_384, 262_144, 64])
@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_same_message_as_pynetdicom(kind: str, max_pdu: int) -> None:
    message_class, build = MESSAGES[kind]
    pdus = _pdus(message_class, build(), max_pdu)
    theirs, their_events = _received(DIMSEServiceProvider, pdus, views=False)
    ours, our_events = _received(ViewDimseProvider, pdus, views=True)
    assert [_summary(item) for item in ours] == [_summary(item) for item in theirs]
    assert len(ours) == 1 and our_events == their_events == []
    # requests this server answers most are read here; the others by pynetdicom
    assert len(HANDED_OVER) == (1 if kind in ("move", "store-rsp") else 0)


@pytest.mark.parametrize("kind", ["echo", "store", "find", "store-move-originator"])
def test_requests_are_read_without_pydicom(kind: str) -> None:
    message_class, build = MESSAGES[kind]
    message = message_class()
    message.primitive_to_message(build())
    pdata = next(iter(message.encode_msg(1, 0)))
    command = bytes(pdata.presentation_data_value_list[0][1][1:])
    fields = decode_command(command)
    assert fields is not None
    assert fields["CommandField"] == message.command_set.CommandField
    assert fields["MessageID"] == message.command_set.MessageID


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _command(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0, 0, struct.pack("<I", len(body))) + body


ECHO_FIELD = _element(0, 0x0100, b"\x30\x00")
NO_DATASET = _element(0, 0x0800, b"\x01\x01")


@pytest.mark.parametrize("command", [
    _command(_element(0, 0x0002, b"1.2\\3.4\0"), ECHO_FIELD, _element(0, 0x0110, b"\x01\x00"), NO_DATASET),
    _command(_element(0, 0x0002, b"1.2.840.10008.1.1\0"), ECHO_FIELD, _element(0, 0x0110, b"\x01\x00\x02\x00"), NO_DATASET),
    _command(_element(0, 0x0002, b"1.2.840.10008.1.1\0"), ECHO_FIELD, _element(0, 0x0902, b"HELLO "), NO_DATASET),
    _command(_element(0, 0x0002, b"1.2.840.10008.1.1\0"), _element(0, 0x0100, b"\x21\x00"), NO_DATASET),
    _command(_element(0, 0x0002, b"1.2.840.10008.1.1\0"), ECHO_FIELD)[:-1],
    _command(_element(0, 0x0002, b"1.2.840.10008.1.1\0"), _element(0, 0x0110, b"\x01\x00"), NO_DATASET),
], ids=["multi-valued-uid", "us-of-two-values", "unknown-element", "c-move", "truncated", "no-field"])
def test_anything_unusual_is_left_to_pynetdicom(command: bytes) -> None:
    assert decode_command(command) is None


def _pdu_of(*items: tuple[int, bytes]) -> bytearray:
    body = b"".join(struct.pack(">IB", len(value) + 1, context_id) + value
                    for context_id, value in items)
    return bytearray(struct.pack(">BBI", 4, 0, len(body)) + body)


def test_an_item_that_does_not_fit_the_pdu_is_an_invalid_pdu() -> None:
    good = _pdu_of((1, b"\x03" + bytes(10)))
    assert pdata_from_pdu(good) is not None
    too_long = bytearray(good)
    too_long[6:10] = struct.pack(">I", 400)
    with pytest.raises(ValueError):
        pdata_from_pdu(too_long)
    too_short = bytearray(good)
    too_short[6:10] = struct.pack(">I", 1)
    with pytest.raises(ValueError):
        pdata_from_pdu(too_short)
    with pytest.raises(ValueError):
        pdata_from_pdu(good + b"\0\0")
    assert pdata_from_pdu(bytearray(b"\x04\0\0\0\0\0")) is None  # no items: pynetdicom's call


def test_an_invalid_uid_ends_the_association_as_pynetdicom_does() -> None:
    command = _command(_element(0, 0x0002, CT.encode() + b"\0"), _element(0, 0x0100, b"\x01\x00"),
                       _element(0, 0x0110, b"\x07\x00"), _element(0, 0x0700, b"\x02\x00"),
                       _element(0, 0x0800, b"\x00\x00"),
                       _element(0, 0x1000, b"1." + b"2" * 70))  # longer than 64 characters
    assert decode_command(command) is not None  # read, then refused by the primitive's check
    pdus = [_pdu_of((1, b"\x03" + command), (1, b"\x02" + bytes(8)))]
    theirs, their_events = _received(DIMSEServiceProvider, pdus, views=False)
    ours, our_events = _received(ViewDimseProvider, pdus, views=True)
    assert HANDED_OVER == [1]
    assert theirs == ours == []
    assert our_events == their_events == ["Evt19"]


def test_two_messages_in_one_pdu_are_both_delivered_in_order() -> None:
    bodies = b"".join(bytes(pdu[6:]) for pdu in _pdus(C_ECHO_RQ, _echo(), 0) + _pdus(C_STORE_RQ, _store(), 0))
    joined = bytearray(struct.pack(">BBI", 4, 0, len(bodies)) + bodies)
    ours, events = _received(ViewDimseProvider, [joined], views=True)
    assert [type(primitive).__name__ for _, primitive in ours] == ["C_ECHO", "C_STORE"]
    assert events == [] and HANDED_OVER == []


def test_data_before_its_command_set_goes_to_pynetdicom() -> None:
    data_first = _pdu_of((1, b"\x02" + bytes(8)))
    rest = _pdus(C_ECHO_RQ, _echo(), 0, context_id=1)
    theirs, their_events = _received(DIMSEServiceProvider, [data_first, *rest], views=False)
    ours, our_events = _received(ViewDimseProvider, [data_first, *rest], views=True)
    assert [_summary(item) for item in ours] == [_summary(item) for item in theirs]
    assert our_events == their_events and HANDED_OVER == [1]


def test_accepted_associations_receive_through_views() -> None:
    from dicomvault.dimse.reactor import install_event_driven_reactors
    from dicomvault.dimse.receive import PDataView

    assoc = _association()
    install_event_driven_reactors(assoc)
    assert isinstance(assoc.dimse, ViewDimseProvider)
    pdu, event = assoc.dul._decode_pdu(_pdus(C_ECHO_RQ, _echo(), 0)[0])
    assert isinstance(pdu, PDataView) and event == "Evt10"
    release_rq = bytearray(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    assert type(assoc.dul._decode_pdu(release_rq)[0]).__name__ == "A_RELEASE_RQ"
