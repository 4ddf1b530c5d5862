"""Text safety: which characters a peer's text may not carry as they are, and
the one neutraliser of the text every log, report and console line shows.

Separate from the fields and the codec because the display side (``cli``)
and every writer of a human-readable file use it without any message.

The *unsafe* characters of the wire (``UNSAFE``) are ASCII C0 controls and
DEL, C1 controls U+0080-U+009F (NEL, CSI ...), the Unicode line and paragraph
separators U+2028/U+2029, the bidi controls U+061C, U+200E, U+200F,
U+202A-U+202E, U+2066-U+2069, and lone surrogates U+D800-U+DFFF (JSON allows
"\\udce9"; Python 3 cannot encode such a str: a client in a non-UTF-8 locale
sends them for a Latin-1 byte in a path).

- ``name`` (identity) and enumerated fields: any unsafe character is refused
  (BAD_FIELD).
- Free text fields (hostname, directory, platform, text, reason ...): ASCII
  C0 controls and DEL are refused (``make()`` turns them into spaces, so our
  client never sends them); every other unsafe character is accepted and
  stored as its visible escape ``\\uXXXX`` (``safe_text``), cut to the field's
  length, so a client with an odd path is still recorded, and what is stored
  can always be encoded and passes validation again when read back.
- ``safe_text(value)`` is the one neutraliser: every writer of server.log,
  report.txt and the console passes text through it as a last line of defence.

``DISPLAY_UNSAFE`` is a wider set on purpose (see its definition): what our
own command lines escape before they show text, and refuse in a --name.
"""
import re

from diskbench.compat import as_text, binary_type, string_types

#: The longest free text a message carries (a reason, a note; characters).
TEXT_MAX_CHARS = 2048
#: ASCII controls: refused in every text field, turned into spaces by clean_text.
_ASCII_CONTROLS = re.compile(u"[\x00-\x1f\x7f]")
if len(u"\U00010000") == 1:  # a wide build (Python 3, most 2.7): one code point
    _SURROGATES = u"[\ud800-\udfff]"
else:  # pragma: no cover - a narrow 2.7 build: astral characters are pairs
    _SURROGATES = (u"[\ud800-\udbff](?![\udc00-\udfff])|"
                   u"(?<![\ud800-\udbff])[\udc00-\udfff]")
#: Every character that could break, forge or disguise a line, or that cannot
#: be encoded as UTF-8 (see the module docstring).
UNSAFE = re.compile(
    u"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]|"
    + _SURROGATES)
#: UNSAFE and the invisible format characters (zero-width space/joiners, word
#: joiner and invisible operators, BOM, interlinear annotation): escaped on
#: display and refused in a --name. Wider than UNSAFE on purpose: the wire's
#: set is part of validation, and widening it would refuse names and text a
#: peer of this protocol version may send.
DISPLAY_UNSAFE = re.compile(u"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                            u"\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


def _escape_char(match):
    return u"\\u%04x" % ord(match.group(0))


def safe_text(value):
    """``value`` as text in which every unsafe character (line breaks of any
    kind, terminal and bidi controls, lone surrogates) is a visible ``\\uXXXX``:
    it stays on one line, shows what it is, and can always be encoded."""
    if not isinstance(value, string_types + (binary_type,)):
        try:
            value = u"%s" % (value,)
        except Exception:  # noqa: B902 - an object whose str() fails
            value = repr(value)
    return UNSAFE.sub(_escape_char, as_text(value, errors="replace"))


def clean_text(value, max_len=TEXT_MAX_CHARS):
    """Make free text (an exception message, a path) fit a text field: ASCII
    controls become spaces, every other unsafe character its escape."""
    value = safe_text(_ASCII_CONTROLS.sub(u" ", as_text(value, errors="replace")))
    return value[:max_len]

