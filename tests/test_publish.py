"""Publishing verdicts to the line against real servers: Debian's mosquitto (plain, and with TLS and a
password file, with a CA and certificates made here by openssl), a local HTTP(S) server, a folder."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.inspector import Inspector
from app.publish import FolderOutput, MqttOutput, Secrets, WebhookOutput, open_publishers
from capture.errors import GutcheckError
from capture.sources import SyntheticSource
from model_builder.bundle import load_bundle
from tests.test_links import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # sbin: not on every user's PATH
PASSWORD = "s3cret-Pa55"  # the test's broker password: must never show in any output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for localhost signed by it, and a second CA nobody trusts."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=gutcheck test CA")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt", "-days", "2",
        "-subj", "/CN=some other CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.ext")
    return {name: folder / f"{name}.crt" for name in ("ca", "other", "server")} | {"key": folder / "server.key"}


class Broker:
    """mosquitto on a free loopback port, started and stopped (by PID) by the test."""

    def __init__(self, folder: Path, tls: dict[str, Path] | None = None, users: dict[str, str] | None = None):
        self.folder, self.port = folder, free_port()
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "user root"]
        if users:
            passwd = folder / "passwd"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['server']}", f"keyfile {tls['key']}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        LIVE_BROKERS.add(self)
        try:
            wait_for(lambda: self._listening(), 5)
        except BaseException:
            self.kill()
            raise

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """Stop the broker if it runs; safe to call twice."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        LIVE_BROKERS.discard(self)


LIVE_BROKERS: set[Broker] = set()


@pytest.fixture(autouse=True)
def no_broker_outlives_its_test():
    """A test that fails half-way (or a restart timer that fires late) must not leave mosquitto running."""
    yield
    for broker in list(LIVE_BROKERS):
        broker.kill()


class Subscriber:
    """A paho client that records every message under `prefix/#`, resubscribing after reconnects."""

    def __init__(self, port: int, prefix: str, **tls):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{prefix}-{id(self)}")
        if tls:
            self.client.tls_set(**tls)
            self.client.username_pw_set("reader", PASSWORD)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("localhost" if tls else "127.0.0.1", port)
        self.client.loop_start()

    def verdicts(self) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.messages if t.endswith("/verdict")]

    def statuses(self) -> list[str]:
        return [p.decode() for t, p, _ in self.messages if t.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def mosquitto_available():
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is missing: `make test` installs it (Debian package mosquitto)")


def inspect(bundle, outputs, parts: int, on_verdict=None) -> Inspector:
    from app.outputs import CallbackOutput

    extra = [CallbackOutput(on_verdict)] if on_verdict else []
    inspector = Inspector(bundle, SyntheticSource(seed=11, parts=parts, defects=0.3), "part", [*outputs, *extra])
    inspector.run()
    return inspector


def test_mqtt_every_verdict_of_a_200_part_run_arrives_once_in_order(mosquitto_available, tiny_bundle, tmp_path):
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port, "plant")
    try:
        wait_for(lambda: sub.client.is_connected(), 5)
        out = MqttOutput(f"mqtt://127.0.0.1:{broker.port}/plant", "line1-st2", Secrets())
        inspector = inspect(load_bundle(tiny_bundle), [out], 200)
        out.close()
        wait_for(lambda: len(sub.verdicts()) >= inspector.inspected, 10)
        time.sleep(0.3)
        got = sub.verdicts()
        parts = [v["part"] for v in got]
        print(f"\nMQTT: {inspector.inspected} verdicts, {out.sent} sent, {len(got)} received, "
              f"{len(parts) - len(set(parts))} duplicates, {out.failed + out.dropped} lost")
        assert inspector.inspected >= 190 and out.sent == inspector.inspected and out.failed == out.dropped == 0
        assert parts == sorted(parts) and len(parts) == len(set(parts)) == inspector.inspected
        assert all(v["station"] == "line1-st2" and v["format"] == "gutcheck-verdict/1" for v in got)
        assert sub.statuses()[0] == "online" and sub.statuses()[-1] == "offline"  # closed cleanly
    finally:
        sub.close()
        broker.kill()


def test_two_publishers_on_one_broker_do_not_knock_each_other_off(mosquitto_available, tiny_bundle, tmp_path):
    """A broker drops a client when another connects with the same id: on f6f4489 lineA and lineB
    shared one and each lost half its verdicts (20 sent, 20 failed)."""
    broker = Broker(tmp_path)
    subs = [Subscriber(broker.port, line) for line in ("lineA", "lineB")]
    try:
        for sub in subs:
            wait_for(lambda: sub.client.is_connected(), 5)
        outs = [MqttOutput(f"mqtt://127.0.0.1:{broker.port}/{line}", "st", Secrets()) for line in ("lineA", "lineB")]
        inspector = inspect(load_bundle(tiny_bundle), outs, 40)
        for out in outs:
            out.close()
        for sub in subs:
            wait_for(lambda: len(sub.verdicts()) >= inspector.inspected, 10)
        assert [(out.sent, out.failed, out.connects) for out in outs] == [(inspector.inspected, 0, 1)] * 2
        assert [len(sub.verdicts()) for sub in subs] == [inspector.inspected] * 2
    finally:
        for sub in subs:
            sub.close()
        broker.kill()


def test_mqtt_broker_killed_and_restarted_mid_run(mosquitto_available, tiny_bundle, tmp_path):
    """Inspection never stalls; the station reconnects and says `online` again; every verdict is either
    acknowledged or counted as failed, and nothing arrives that was not published."""
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port, "plant")
    bundle = load_bundle(tiny_bundle)
    restarted = threading.Event()
    restart = threading.Timer(1.5, lambda: (broker.start(), restarted.set()))
    try:
        wait_for(lambda: sub.client.is_connected(), 5)
        quiet = time.perf_counter()
        inspect(bundle, [], 120)
        quiet = time.perf_counter() - quiet
        out = MqttOutput(f"mqtt://127.0.0.1:{broker.port}/plant", "st", Secrets())

        def on_verdict(v):
            if v.part == 30:
                broker.kill()
                restart.start()

        start = time.perf_counter()
        inspector = inspect(bundle, [out], 120, on_verdict)
        took = time.perf_counter() - start
        assert restarted.wait(5)
        wait_for(lambda: out.connected.is_set(), 20)
        out.close()
        time.sleep(0.5)
        got = sub.verdicts()
        parts = [v["part"] for v in got]
        n = inspector.inspected
        print(f"\nbroker restart: {n} verdicts in {took:.1f} s (alone {quiet:.1f} s): {out.sent} sent, "
              f"{out.failed} failed, {out.dropped} dropped; {len(got)} received after the restart's subscriber "
              f"reconnect, {len(parts) - len(set(parts))} duplicates; connects {out.connects}; "
              f"status messages {sub.statuses()}")
        assert took < quiet * 1.5 + 2.0  # never stalled on the dead broker
        # Every verdict is accounted for: acknowledged (perhaps after the reconnect: paho resends what was in
        # flight) or counted as failed; which of the two depends on when the station noticed the broker gone.
        assert out.sent + out.failed + out.dropped == n
        assert out.connects >= 2 and "online" in sub.statuses()
        assert set(parts) <= set(range(1, n + 1))
    finally:
        restart.cancel()
        if restart.is_alive():
            restart.join()
        sub.close()
        broker.kill()


def test_station_killed_leaves_offline_on_the_status_topic(mosquitto_available, tiny_bundle, tmp_path):
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port, "plant")
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "inspect", "--model", str(tiny_bundle), "--source",
                                 "synthetic:seed=3,parts=400,fps=30", "--publish",
                                 f"mqtt://127.0.0.1:{broker.port}/plant", "--station", "st9"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for(lambda: len(sub.verdicts()) >= 3, 60)
        proc.kill()  # the station dies: the broker publishes its last will
        proc.wait()
        wait_for(lambda: sub.statuses()[-1:] == ["offline"], 30)
        assert sub.statuses()[0] == "online"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
        broker.kill()


def test_mqtts_with_password_and_what_refuses_to_start(mosquitto_available, tiny_bundle, tmp_path, monkeypatch):
    certs = make_certificates(tmp_path)
    broker = Broker(tmp_path, tls=certs, users={"station": PASSWORD, "reader": PASSWORD})
    url = f"mqtts://localhost:{broker.port}/plant?ca={certs['ca']}"
    sub = Subscriber(broker.port, "plant", ca_certs=str(certs["ca"]))
    try:
        wait_for(lambda: sub.client.is_connected(), 5)
        out = MqttOutput(url, "st", Secrets("station", PASSWORD))
        inspector = inspect(load_bundle(tiny_bundle), [out], 10)
        out.close()
        wait_for(lambda: len(sub.verdicts()) == inspector.inspected, 10)
        assert out.sent == inspector.inspected > 0

        refusals = {
            "wrong password": (url, Secrets("station", "wrong")),
            "untrusted certificate": (f"mqtts://localhost:{broker.port}/plant?ca={certs['other']}",
                                      Secrets("station", PASSWORD)),
            "password in the URL": (f"mqtts://station:{PASSWORD}@localhost:{broker.port}/plant", Secrets()),
        }
        for case, (bad_url, secrets) in refusals.items():
            with pytest.raises(GutcheckError) as err:
                MqttOutput(bad_url, "st", secrets)
            print(f"\n{case}: {err.value}")
            assert PASSWORD not in str(err.value) and "\n" not in str(err.value)
        # the same through the CLI: one line, exit 2, the password in the environment and nowhere else
        env = {**os.environ, "GUTCHECK_MQTT_USERNAME": "station", "GUTCHECK_MQTT_PASSWORD": "wrong"}
        proc = subprocess.run([sys.executable, "-m", "app.cli", "inspect", "--model", str(tiny_bundle), "--source",
                               "synthetic:parts=2", "--publish", url], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "refused the connection" in proc.stderr
        env["GUTCHECK_MQTT_PASSWORD"] = PASSWORD
        proc = subprocess.run([sys.executable, "-m", "app.cli", "inspect", "--model", str(tiny_bundle), "--source",
                               "synthetic:parts=3", "--publish", url], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr
    finally:
        sub.close()
        broker.kill()


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook: takes every POST (204), or answers `status` / hangs once `fail_after` records came."""
    bodies: list[dict] = []
    headers_seen: list[dict] = []
    fail_after: int | None = None
    failure: int | str = 500  # an HTTP status, or "hang" (never answer)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.bodies.append(json.loads(body))
        cls.headers_seen.append(dict(self.headers))
        if cls.fail_after is not None and len(cls.bodies) > cls.fail_after:
            if cls.failure == "hang":
                time.sleep(30)
                return
            self.send_response(cls.failure)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(tls: dict[str, Path] | None = None, fail_after: int | None = None,
          failure: int | str = 500) -> http.server.ThreadingHTTPServer:
    Receiver.bodies, Receiver.headers_seen = [], []
    Receiver.fail_after, Receiver.failure = fail_after, failure
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["server"], tls["key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()  # the port closed: a POST now meets "connection refused"


def verdict_parts() -> list[int]:
    return [b["part"] for b in Receiver.bodies if "part" in b]


def test_webhook_gets_every_verdict_once_in_order_with_the_token_and_https_is_verified(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    server = serve()
    try:
        out = WebhookOutput(f"http://127.0.0.1:{server.server_port}/verdicts", "st", Secrets(webhook_token="tok"))
        inspector = inspect(bundle, [out], 200)
        out.close(30)
        parts = verdict_parts()
        print(f"\nwebhook: {inspector.inspected} verdicts, {out.sent} sent, {len(parts)} received, "
              f"{len(parts) - len(set(parts))} duplicates")
        assert parts == list(range(1, inspector.inspected + 1)) or parts == sorted(set(parts))
        assert len(parts) == inspector.inspected == out.sent
        assert Receiver.headers_seen[0]["Authorization"] == "Bearer tok"
        statuses = [b["status"] for b in Receiver.bodies if b.get("format") == "gutcheck-status/1"]
        assert statuses == ["online", "offline"] and Receiver.bodies[0]["status"] == "online"
    finally:
        stop(server)

    certs = make_certificates(tmp_path)
    server = serve(certs)
    try:
        trusted = WebhookOutput(f"https://localhost:{server.server_port}/v?line=4&ca={certs['ca']}", "st", Secrets())
        assert trusted.url == f"https://localhost:{server.server_port}/v?line=4"  # its own query kept, ours not
        with pytest.raises(GutcheckError, match="CERTIFICATE_VERIFY_FAILED"):  # refused at start, not later
            WebhookOutput(f"https://localhost:{server.server_port}/v", "st", Secrets(), retries_s=())
        inspector = inspect(bundle, [trusted], 5)
        trusted.close(30)
        assert trusted.sent == inspector.inspected == len(verdict_parts())
    finally:
        stop(server)


@pytest.mark.parametrize("failure, words", [("closed", "Connection refused"), (500, "HTTP 500"),
                                            (404, "HTTP 404"), ("hang", "timed out")])
def test_a_webhook_that_is_not_there_or_answers_an_error_is_refused_at_start(failure, words):
    server = serve(fail_after=0, failure=failure if failure != "closed" else 500)
    port = server.server_port
    if failure == "closed":
        stop(server)
    try:
        with pytest.raises(GutcheckError, match=f"127.0.0.1:{port}/hook: the webhook did not take .*{words}"):
            WebhookOutput(f"http://127.0.0.1:{port}/hook", "st", Secrets(), retries_s=())
    finally:
        if failure != "closed":
            stop(server)


def test_a_dead_webhook_never_slows_inspection(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    start = time.perf_counter()
    alone = inspect(bundle, [], 20)
    alone_s = time.perf_counter() - start
    server = serve()
    out = WebhookOutput(f"http://127.0.0.1:{server.server_port}/nobody", "st", Secrets(), retries_s=(0.2,))
    stop(server)  # it was there at start and went away
    start = time.perf_counter()
    inspector = inspect(bundle, [out], 20)
    took = time.perf_counter() - start
    assert inspector.inspected == alone.inspected and took < alone_s * 1.5 + 1.0
    out.close(30)
    assert out.failed == inspector.inspected and out.sent == 0


@pytest.mark.parametrize("failure", [500, "hang"])
def test_every_verdict_ends_sent_dropped_or_failed_also_at_close(tiny_bundle, failure):
    """A webhook that takes two verdicts and then answers 500 or never answers: at close, every
    verdict is in exactly one counter, the ones still queued or in flight among the failed."""
    server = serve(fail_after=3, failure=failure)  # the online status and two verdicts
    try:
        out = WebhookOutput(f"http://127.0.0.1:{server.server_port}/hook", "st", Secrets(), maxsize=4,
                            retries_s=(0.1,))
        inspector = inspect(load_bundle(tiny_bundle), [out], 12)
        out.close(1.0)
        print(f"\nwebhook failing with {failure}: {out.summary()}")
        assert out.received == inspector.inspected
        assert out.sent == 2 and out.sent + out.dropped + out.failed == out.received
        assert out.lost == inspector.inspected - 2
        late = out.sent, out.failed
        time.sleep(1.5)  # the sending thread may still finish a POST: it changes no counter now
        assert (out.sent, out.failed) == late
    finally:
        stop(server)


def test_inspect_that_lost_verdicts_does_not_exit_0(tiny_bundle, capsys):
    from app.cli import main

    server = serve(fail_after=2, failure=500)  # the online status and one verdict, then 500s
    try:
        code = main(["inspect", "--model", str(tiny_bundle), "--source", "synthetic:parts=4,seed=1",
                     "--publish", f"http://127.0.0.1:{server.server_port}/hook"])
    finally:
        stop(server)
    err = capsys.readouterr().err
    print(err)
    assert code == 2
    assert "4 verdicts: 1 sent, 0 dropped, 3 failed" in err
    assert err.strip().splitlines()[-1].startswith("gutcheck: error: verdicts lost: webhook 127.0.0.1/hook: 3 of 4")


def test_folder_output_sorts_framed_images_by_date_and_verdict(tiny_bundle, tmp_path):
    out = FolderOutput(tmp_path / "audit")
    inspector = inspect(load_bundle(tiny_bundle), [out], 12)
    out.close()
    files = sorted((tmp_path / "audit").rglob("*.png"))
    assert len(files) == inspector.inspected == out.sent
    assert {f.parent.name for f in files} <= {"ok", "anomaly"} and len({f.parent.parent.name for f in files}) == 1
    assert inspector.anomalies == sum(f.parent.name == "anomaly" for f in files)


def test_publish_urls_come_from_the_settings_file_too_and_bad_ones_are_refused(tmp_path):
    settings = tmp_path / "s.toml"
    settings.write_text(f'station = "cell 4"\npublish = ["folder:{tmp_path / "a"}"]\n')
    outputs = open_publishers([f"folder:{tmp_path / 'b'}"], "", settings)
    try:
        assert [o.name for o in outputs] == [f"folder {tmp_path / 'a'}", f"folder {tmp_path / 'b'}"]
    finally:
        for o in outputs:
            o.close()
    with pytest.raises(GutcheckError, match="cannot publish to 'ftp://x'"):
        open_publishers(["ftp://x"])
