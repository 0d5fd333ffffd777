"""`fiberwatch fl`: help, one-line errors, argument parsing; the node runtime's poll backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.flower import node_runtime
from fiberwatch.cli import main
from fiberwatch.commands import fl


@pytest.mark.parametrize("argv", [["fl", "--help"], ["fl", "server", "--help"],
                                  ["fl", "node", "--help"], ["fl", "run", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0 and "usage: fiberwatch fl" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["fl", "server", "--workdir", "w"], "TLS needs --ssl-ca"),
    (["fl", "server", "--workdir", "w", "--insecure", "--broker", "h:1"], "--broker needs"),
    (["fl", "run"], "TLS needs --root-certificates"),
    (["fl", "node", "--insecure"], "give --config"),
    (["fl", "node", "--superlink", "h:1", "--normal-buffer", "b"], "TLS needs"),
    (["fl", "node", "--config", "missing.toml"], "file not found"),
    (["fl", "run", "--insecure", "--set", "oops"], "KEY=VALUE"),
    # plain HTTP only on loopback; TLS nodes need their authentication key
    (["fl", "server", "--workdir", "w", "--insecure", "--host", "0.0.0.0"],
     "accepted only on loopback"),
    (["fl", "server", "--workdir", "w", "--insecure", "--node-auth"], "need TLS"),
    (["fl", "run", "--insecure", "--superlink", "10.0.0.5:9092"], "accepted only on loopback"),
    (["fl", "node", "--insecure", "--superlink", "fl.example.com:9092", "--normal-buffer", "b"],
     "accepted only on loopback"),
    (["fl", "node", "--superlink", "h:1", "--normal-buffer", "b", "--root-certificates", "ca"],
     "--auth-key"),
    (["fl", "server", "--workdir", "w", "--insecure", "--broker", "h:1", "--registry", "r",
      "--canary", "s/g"], "--public-key"),
])
def test_bad_input_is_one_line(argv: list[str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_keys_refuse_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = tmp_path / "n.key", tmp_path / "n.pub"
    assert main(["fl", "keys", str(priv), str(pub)]) == 0
    assert pub.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert priv.stat().st_mode & 0o077 == 0
    assert main(["fl", "keys", str(priv), str(pub)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_set_values_are_typed() -> None:
    assert fl._parse_set(["a=1", "b=0.5", "c=true", "d=text", 'e="q"']) == {
        "a": 1, "b": 0.5, "c": True, "d": "text", "e": "q"}


def test_round_line() -> None:
    line = fl._round_line({"round": 2, "participants": 4, "failures": 1, "loss": 0.5,
                           "auc": 0.9, "bytes_up": 250, "bytes_up_fp32": 1000,
                           "duration_s": 1.25}, 5)
    assert line == ("round 2/5: 4 clients, 1 failed, loss 0.5000, AUC 0.9000, "
                    "up 250 B/client (25% of fp32), 1.25 s")


def test_backoff_fast_during_a_run_slow_when_idle() -> None:
    now = [0.0]
    b = node_runtime.Backoff(0.1, 3.0, active_s=0.3, window_s=10, clock=lambda: now[0])
    b.busy()
    delays = [b.idle() for _ in range(6)]
    assert delays[0] == 0.1 and max(delays) == 0.3 and delays == sorted(delays)
    now[0] = 20.0  # nothing for a while: back off towards flwr's 3 s
    delays = [b.idle() for _ in range(10)]
    assert delays[-1] == 3.0
    b.busy()
    assert b.idle() == 0.1


def test_capped_sleep_keeps_the_rest_of_time() -> None:
    slept: list[float] = []

    class FakeTime:
        def sleep(self, s: float) -> None:
            slept.append(s)

        def monotonic(self) -> float:
            return 42.0

    capped = node_runtime._CappedSleep(FakeTime(), node_runtime.Backoff(0.1, 3.0))  # type: ignore[arg-type]
    capped.sleep(0.5)  # waiting for the ClientApp's reply
    capped.sleep(3)  # idle poll right after a message
    assert slept == [0.1, 0.1] and capped.monotonic() == 42.0
