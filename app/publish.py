"""Publishing verdicts to the line: outputs named by a URL (`--publish URL`, or `publish` in the
settings file), each a queued output (app/outputs.py) that never slows inspection.

    mqtt://host:1883/prefix     one message per verdict on prefix/<station>/verdict (QoS 1), the
    mqtts://host:8883/prefix    station's status retained on prefix/<station>/status ("online", and
                                "offline" as the last will); TLS for mqtts (server certificate checked
                                against ?ca=FILE, else the system's; ?cert=FILE&key=FILE for a client
                                certificate)
    http://host/path            POST of the same JSON, retried with backoff
    https://host/path           the same over TLS (certificates verified; ?ca=FILE for a private CA)
    folder:PATH                 the framed image of each part into PATH/<date>/<ok|anomaly>/

Secrets never come from the command line (a URL with user:password@ is refused): the MQTT user
name and password and the webhook's bearer token come from the environment (GUTCHECK_MQTT_USERNAME,
GUTCHECK_MQTT_PASSWORD, GUTCHECK_WEBHOOK_TOKEN) or the settings file, and never appear in a message.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from app.outputs import QueuedOutput
from app.redact import redact
from app.verdict import Verdict
from capture.errors import GutcheckError
from capture.imageio import folder_problem, write_image_atomic

MQTT_QOS = 1
CONNECT_TIMEOUT_S = 5.0
COMMAND_QUEUE = 100  # line commands waiting for the station; more are answered "busy", never piled up


@dataclass(frozen=True)
class LineCommand:
    """What the line's controller may ask of a station over MQTT: a changeover or a stop. Never thresholds:
    those are set at the station, by a person, and audited there."""

    command: str  # "recipe" or "stop"
    recipe: str = ""


def parse_command(payload: bytes) -> LineCommand | str:
    """The command in one message on prefix/<station>/command, or one line saying why it is refused
    (a pure function of the bytes: `{"command": "recipe", "name": "flange"}`, `{"command": "stop"}`)."""
    from app.recipes import check_name

    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "not a JSON command"
    if not isinstance(data, dict):
        return "not a JSON object"
    command = data.get("command")
    if command == "stop":
        return LineCommand("stop")
    if command == "recipe":
        try:
            return LineCommand("recipe", check_name(data.get("name")))
        except GutcheckError as exc:
            return str(exc)
    return (f"unknown command {str(command)[:40]!r}: a station takes only 'recipe' and 'stop' from the line "
            "(thresholds are set at the station)")
STATUS_FORMAT = "gutcheck-status/1"  # a webhook's online/offline record
WEBHOOK_RETRIES_S = (0.5, 1.0, 2.0)  # waits between the tries of one POST, then it counts as failed


@dataclass(frozen=True)
class Secrets:
    """Credentials for publishers, from the environment first, then the settings file."""

    mqtt_username: str = ""
    mqtt_password: str = ""
    webhook_token: str = ""

    @classmethod
    def gather(cls, settings=None) -> "Secrets":
        def pick(env: str, attr: str) -> str:
            return os.environ.get(env) or str(getattr(settings, attr, "") or "")

        return cls(pick("GUTCHECK_MQTT_USERNAME", "mqtt_username"), pick("GUTCHECK_MQTT_PASSWORD", "mqtt_password"),
                   pick("GUTCHECK_WEBHOOK_TOKEN", "webhook_token"))


def station_name(name: str = "") -> str:
    """A topic-safe station name: the one given, else the host's name."""
    name = name or socket.gethostname() or "station"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:64]
    if not safe.strip("-"):
        raise GutcheckError(f"station name {name!r} has no letters or digits")
    return safe


def _query(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    out = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        out[key] = values[-1]
    return out


def _file_option(options: dict[str, str], key: str, url: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not Path(value).is_file():
        raise GutcheckError(f"{redact(url)}: {key} file {value} does not exist")
    return value


def checked_url(url: str, secrets_from: str):
    """`url` split, or a one-line error that never repeats a secret: no user information at all (an
    `@` anywhere: a password with `/` or `#` in it does not even parse as user information), and a
    port, if given, from 1 to 65535. `secrets_from` says where the secrets go instead."""
    if "@" in url:
        raise GutcheckError(f"{redact(url)}: no user name or password in the URL (a command line is seen by every "
                            f"user of the machine): set {secrets_from}; write a literal @ as %40")
    parts = urlsplit(url)
    try:
        port = parts.port  # None when not given; ValueError when not a number or above 65535
    except ValueError:
        port = 0
    if port == 0:
        raise GutcheckError(f"{url}: the port must be a number from 1 to 65535")
    return parts


# one client id per publisher: a broker drops a client when another connects with its id, so two
# --publish URLs on one broker (lineA, lineB) would knock each other off forever
_CLIENT_NUMBERS = itertools.count(1)


class MqttOutput(QueuedOutput):
    """Publishes each verdict to an MQTT broker; reconnects with backoff while inspection goes on.

    A verdict counts as sent when the broker acknowledged it (QoS 1). While the broker is away,
    verdicts are counted as failed rather than piled up; one that was in flight when the link broke
    counts as failed too, and paho may still deliver it after the reconnect (at least once: a reader
    deduplicates on `part` and `time`)."""

    name = "mqtt"

    def __init__(self, url: str, station: str, secrets: Secrets, maxsize: int = 1000):
        import paho.mqtt.client as mqtt

        parts = checked_url(url, "GUTCHECK_MQTT_USERNAME / GUTCHECK_MQTT_PASSWORD or mqtt_username / "
                                 "mqtt_password in the settings file")
        if not parts.hostname:
            raise GutcheckError(f"{url}: no broker host (mqtt://HOST:PORT/PREFIX)")
        self.url = url  # checked_url refused any user information
        self.tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname, parts.port or (8883 if self.tls else 1883)
        self.prefix = parts.path.strip("/") or "gutcheck"
        self.station = station
        self.topic = f"{self.prefix}/{station}/verdict"
        self.status_topic = f"{self.prefix}/{station}/status"
        # the line's commands come in on the same authenticated connection (the broker's ACL says who may send)
        self.command_topic = f"{self.prefix}/{station}/command"
        self.commands: queue.Queue[LineCommand | str] = queue.Queue(COMMAND_QUEUE)
        self.name = f"mqtt {self.host}:{self.port}/{self.prefix}"
        options = _query(url)
        self.connected = threading.Event()
        self.connects = 0
        self._connack: str | None = None
        self._got_connack = threading.Event()
        client_id = f"gutcheck-{station}-{os.getpid()}-{next(_CLIENT_NUMBERS)}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.will_set(self.status_topic, "offline", qos=MQTT_QOS, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=16)
        if secrets.mqtt_username or secrets.mqtt_password:
            client.username_pw_set(secrets.mqtt_username, secrets.mqtt_password)
        if self.tls:
            try:
                client.tls_set(ca_certs=_file_option(options, "ca", url), certfile=_file_option(options, "cert", url),
                               keyfile=_file_option(options, "key", url), cert_reqs=ssl.CERT_REQUIRED)
            except ssl.SSLError as exc:
                raise GutcheckError(f"{self.url}: cannot use the TLS files ({exc.reason or exc})") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._connect()
        super().__init__(maxsize)

    def _connect(self) -> None:
        """Connect now: a wrong address, password or certificate is a one-line error at start."""
        try:
            self.client.connect(self.host, self.port, keepalive=10)
        except ssl.SSLCertVerificationError as exc:
            raise GutcheckError(f"{self.url}: the broker's certificate is not trusted ({exc.verify_message}); "
                                "give its CA file with ?ca=FILE") from None
        except (OSError, ssl.SSLError) as exc:
            raise GutcheckError(f"{self.url}: cannot reach the broker ({exc.strerror or exc})") from None
        self.client.loop_start()
        if not self._got_connack.wait(CONNECT_TIMEOUT_S) or self._connack != "Success":
            reason = self._connack or f"no answer in {CONNECT_TIMEOUT_S:g} s"
            self.client.loop_stop()
            raise GutcheckError(f"{self.url}: the broker refused the connection ({reason}); check the user name "
                                "and password (GUTCHECK_MQTT_USERNAME / GUTCHECK_MQTT_PASSWORD)")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = str(reason_code)
        self._got_connack.set()
        if not reason_code.is_failure:
            self.connects += 1
            client.publish(self.status_topic, "online", qos=MQTT_QOS, retain=True)
            client.subscribe(self.command_topic, qos=MQTT_QOS)  # again after every reconnect
            self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic != self.command_topic:
            return
        got = parse_command(message.payload)
        try:
            self.commands.put_nowait(got)
        except queue.Full:
            self.answer(got, False, "the station is busy with earlier commands")

    def answer(self, command: LineCommand | str, accepted: bool, detail: str) -> None:
        """The station's answer to a line command, on prefix/<station>/command/result."""
        if self.connected.is_set():
            name = command.command if isinstance(command, LineCommand) else "?"
            body = {"command": name, **({"recipe": command.recipe} if isinstance(command, LineCommand) and
                                       command.recipe else {}), "accepted": accepted, "detail": detail,
                    "station": self.station, "time": time.time()}
            self.client.publish(f"{self.command_topic}/result", json.dumps(body), qos=MQTT_QOS)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            self.last_error = f"broker connection lost ({reason_code}); reconnecting"

    def state(self) -> str:
        if self.connected.is_set():
            return "connected"
        return f"offline: {self.last_error}" if self.last_error else "offline"

    def send(self, verdict: Verdict) -> None:
        if not self.connected.is_set():
            raise ConnectionError("broker offline: verdict not sent")
        payload = json.dumps({**verdict.to_json(), "station": self.station}, allow_nan=False)
        info = self.client.publish(self.topic, payload, qos=MQTT_QOS)
        info.wait_for_publish(timeout=CONNECT_TIMEOUT_S)
        if not info.is_published():
            raise ConnectionError("the broker did not acknowledge the verdict")

    def send_event(self, event: dict) -> None:
        """A drift message on prefix/<station>/drift."""
        if self.connected.is_set():
            self.client.publish(f"{self.prefix}/{self.station}/drift", json.dumps({**event, "station": self.station}),
                                qos=MQTT_QOS)

    def close(self, timeout_s: float = 5.0) -> None:
        super().close(timeout_s)
        if self.connected.is_set():
            self.client.publish(self.status_topic, "offline", qos=MQTT_QOS, retain=True).wait_for_publish(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()


class WebhookOutput(QueuedOutput):
    """POSTs each verdict's JSON to a URL; each POST is tried 1 + len(WEBHOOK_RETRIES_S) times."""

    name = "webhook"

    def __init__(self, url: str, station: str, secrets: Secrets, maxsize: int = 1000,
                 retries_s: tuple[float, ...] = WEBHOOK_RETRIES_S):
        parts = checked_url(url, "GUTCHECK_WEBHOOK_TOKEN or webhook_token in the settings file (sent as a "
                                 "bearer token)")
        if not parts.hostname:
            raise GutcheckError(f"{url}: no host (http://HOST/PATH)")
        options = _query(url)
        # `ca` is ours (the CA file to trust); any other query is the webhook's own and is kept
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ca"]
        self.url = parts._replace(query=urlencode(kept)).geturl()
        self.name = f"webhook {parts.hostname}{parts.path}"
        self.station = station
        self.token = secrets.webhook_token
        self.retries_s = retries_s
        self.context = ssl.create_default_context(cafile=_file_option(options, "ca", url)) \
            if parts.scheme == "https" else None
        # like the broker's CONNACK: a webhook that is not there, never answers or answers an error
        # is refused now, not found out from a counter at the end of the shift
        try:
            self._post_once(self._status("online"))
        except ConnectionError as exc:
            raise GutcheckError(f"{self.url}: the webhook did not take the station's status POST ({exc}); "
                                "check the address (it must answer 2xx)") from None
        super().__init__(maxsize)

    def _status(self, status: str) -> dict:
        return {"format": STATUS_FORMAT, "status": status, "station": self.station}

    def send(self, verdict: Verdict) -> None:
        self._post({**verdict.to_json(), "station": self.station})

    def send_event(self, event: dict) -> None:
        """A drift message: POSTed like a verdict; its `format` tells them apart."""
        self._post({**event, "station": self.station})

    def _post(self, record: dict) -> None:
        """POST with retries; ConnectionError after the last try."""
        for wait in (*self.retries_s, None):
            try:
                return self._post_once(record)
            except ConnectionError:
                if wait is None:
                    raise
            time.sleep(wait)

    def _post_once(self, record: dict, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        body = json.dumps(record, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            request = urllib.request.Request(self.url, body, headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout_s, context=self.context) as reply:
                if 200 <= reply.status < 300:
                    return
                problem = f"HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = str(getattr(reason, "strerror", None) or reason)
        raise ConnectionError(problem)

    def close(self, timeout_s: float = 5.0) -> None:
        super().close(timeout_s)
        try:  # best effort, like MQTT's offline status; the verdicts' counts are already settled
            self._post_once(self._status("offline"), timeout_s=min(timeout_s, 2.0))
        except ConnectionError:
            pass


class FolderOutput(QueuedOutput):
    """The framed image of each part into PATH/<date>/<ok|anomaly>/<time>_part<N>.png (atomic writes)."""

    name = "folder"

    def __init__(self, folder: Path, maxsize: int = 1000):
        self.folder = Path(folder)
        # checked, not made: the folder appears with the first image, so a refusal later at start
        # (another publisher, the conveyor) leaves nothing behind
        problem = folder_problem(self.folder)
        if problem:
            raise GutcheckError(f"folder:{folder}: cannot write there ({problem})")
        self.name = f"folder {folder}"
        super().__init__(maxsize)

    def send(self, verdict: Verdict) -> None:
        local = time.localtime(verdict.time)
        name = f"{time.strftime('%H%M%S', local)}-{int(verdict.time * 1000) % 1000:03d}_part{verdict.part}.png"
        write_image_atomic(self.folder / time.strftime("%Y-%m-%d", local) / ("anomaly" if verdict.anomaly else "ok")
                           / name, verdict.framed_image())


# URL scheme -> the output that publishes there
PUBLISHERS: dict[str, Callable[[str, str, Secrets], QueuedOutput]] = {
    "mqtt": MqttOutput,
    "mqtts": MqttOutput,
    "http": WebhookOutput,
    "https": WebhookOutput,
    "folder": lambda url, station, secrets: FolderOutput(folder_of(url)),
}


def folder_of(url: str) -> Path:
    """The folder a `folder:PATH` URL names (refused when empty: it would be the working folder)."""
    path = url.split(":", 1)[1]
    if not path.strip():
        raise GutcheckError("folder: names no folder: give folder:PATH")
    return Path(path)


def open_publisher(url: str, station: str, secrets: Secrets) -> QueuedOutput:
    """The output a `--publish` URL names, connected and checked now (one-line errors at start)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in PUBLISHERS:
        raise GutcheckError(f"cannot publish to {redact(url)!r}: use mqtt://, mqtts://, http://, https:// or "
                            "folder:PATH")
    return PUBLISHERS[scheme](url, station, secrets)


def open_publishers(urls: list[str] | None, station: str = "", settings_path: Path | None = None) -> list[QueuedOutput]:
    """The publishers named on the command line and in the settings file (its `publish` list, its
    station name and secrets), all opened now; if one fails, those opened are closed again."""
    from app.settings import Settings, load_settings

    settings = load_settings(settings_path) if settings_path is not None else Settings()
    wanted = [*settings.publish, *(urls or [])]
    if not wanted:
        return []
    name = station_name(station or settings.station)
    secrets = Secrets.gather(settings)
    opened: list[QueuedOutput] = []
    try:
        # each once, in order; a folder spelled two ways (out, ./out/, /abs/out) is one publisher
        same = {url: f"folder:{folder_of(url).resolve()}" if url.lower().startswith("folder:") else url
                for url in wanted}
        for url in dict.fromkeys(same[u] for u in wanted):
            opened.append(open_publisher(url, name, secrets))
    except BaseException:
        for output in opened:
            output.close(1.0)
        raise
    return opened
