from easymesh.escape import printable


def test_newlines_and_escapes_become_visible() -> None:
    out = printable("node\nWARNING forged\x1b[2J\u2028")
    assert "\n" not in out and "\x1b" not in out and "\u2028" not in out
    assert out == "node\\x0aWARNING forged\\x1b[2J\\u2028"


def test_backslash_is_escaped_so_text_reads_back_unambiguously() -> None:
    assert printable("a\\x0ab") == "a\\\\x0ab"


def test_bytes_are_decoded_and_length_is_bounded() -> None:
    assert printable(b"ok\xff") == "ok\ufffd"
    out = printable("x" * 1000, limit=10)
    assert out == "x" * 10 + "..."


def test_objects_whose_str_fails() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError

    assert printable(Bad()) == "<Bad>"
