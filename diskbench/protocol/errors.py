"""ProtocolError: what every refusal of a line or message raises, with its kind.

Its own module because framing, validation, the codec and the records all
raise it, and none of them should import another only for the class.
"""


class ProtocolError(ValueError):
    """A message that cannot be accepted, with a reason a human can act on."""

    NOT_UTF8 = "not-utf8"
    NOT_JSON = "not-json"
    NOT_OBJECT = "not-object"
    BAD_VERSION = "bad-version"
    UNKNOWN_TYPE = "unknown-type"
    MISSING_FIELD = "missing-field"
    BAD_FIELD = "bad-field"
    UNKNOWN_FIELD = "unknown-field"
    TOO_LONG = "too-long"
    BAD_MAC = "bad-mac"

    def __init__(self, kind, reason, peer_version=None):
        ValueError.__init__(self, reason)
        self.kind = kind
        self.reason = reason
        self.peer_version = peer_version  # BAD_VERSION: the version the peer spoke

    def __str__(self):
        return self.reason

