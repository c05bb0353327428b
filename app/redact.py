"""Secrets out of anything a person or a file will see: error lines, crash logs, status names.

A publish URL may arrive with a password in it (`mqtt://op:secret@host`, or one that does not even
parse, `op:S3c/ret@host`); the user information is everything between `://` and the last `@` of the
same word, and it is replaced before the text goes anywhere."""

from __future__ import annotations

import os
import re

HIDDEN = "***"
# scheme://anything-without-spaces@ ; greedy, so the last @ of the word ends the user information
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s'\"]*@")
# the environment variables that hold secrets (app/publish.py: Secrets)
SECRET_VARIABLES = ("GUTCHECK_MQTT_PASSWORD", "GUTCHECK_WEBHOOK_TOKEN")


def redact(text: str) -> str:
    """`text` with URL user information and the values of the secret environment variables hidden."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 4:  # a one-letter "secret" would blank every such letter in the text
            text = text.replace(value, HIDDEN)
    return text
