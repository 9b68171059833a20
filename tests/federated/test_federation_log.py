"""The aggregator finds refused node keys in the SuperLink's log, reading only what is new."""

from __future__ import annotations

from pathlib import Path

from bastion.federated.federation import Federation

#: A PEM key as the SuperLink's log shows it (a bytes repr: newlines escaped).
KEY = (
    "-----BEGIN PUBLIC KEY-----\\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE{fill}"
    "\\n-----END PUBLIC KEY-----\\n"
)


def _refused(fill: str) -> str:
    key = KEY.format(fill=fill * 60)
    return f"WARNING : Attempted to register SuperNode with public key: b'{key}'\n"


def test_refused_keys_come_from_whole_new_lines_once_each(tmp_path: Path) -> None:
    federation = Federation(home=tmp_path, environment=tmp_path, port=1)
    assert federation.refused_keys() == []  # no log yet
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "superlink.log"
    first = _refused("A")
    log.write_text("INFO : started\n" + first[:40])  # a line still being written
    assert federation.refused_keys() == []
    with log.open("a") as output:
        output.write(first[40:] + first + "INFO : served\n")
    (found,) = federation.refused_keys()  # the same key twice: once
    assert found.startswith(b"-----BEGIN PUBLIC KEY-----\nMHYw") and b"AAAA" in found
    with log.open("a") as output:
        output.write(_refused("B"))
    assert [b"BBBB" in key for key in federation.refused_keys()] == [False, True]
    assert len(federation.refused_keys()) == 2  # nothing new: nothing read again
