"""ingress/api_tokens.py: the tokens file, Authorization fields, and the look-up."""

from pathlib import Path

import pytest

from ingress.api_tokens import MIN_TOKEN_LENGTH, Client, Tokens, TokensError, bearer_token

TOKEN_A = "tokA-" + "a" * 30
TOKEN_B = "b/+~._" + "B" * 30 + "=="


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text, "utf-8")
    return path


def test_named_and_unnamed_tokens(tmp_path: Path) -> None:
    tokens = Tokens.load(
        write(tmp_path, f"# clients\n\nshop-1:{TOKEN_A}\n  {TOKEN_B}  \n# the end\n")
    )
    assert len(tokens) == 2
    assert tokens.client(TOKEN_A) == Client("shop-1")
    assert tokens.client(TOKEN_B) == Client("api")
    assert tokens.client(TOKEN_A[:-1]) is None
    assert tokens.client(TOKEN_A + "a") is None
    assert tokens.client("") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no token"),
        ("# only a comment\n", "no token"),
        ("short:abc\n", f"shorter than {MIN_TOKEN_LENGTH}"),
        (f"bad name:{TOKEN_A}\n", "name 'bad name'"),
        (f"-x:{TOKEN_A}\n", "name '-x'"),
        (f":{TOKEN_A}\n", "name ''"),
        (f"n:{TOKEN_A} extra\n", "b64token"),
        (f"n:{TOKEN_A}é\n", "b64token"),
        (f"a:{TOKEN_A}\nb:{TOKEN_A}\n", ":2: the same token as 'a'"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(TokensError) as info:
        Tokens.load(write(tmp_path, text))
    assert problem in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_a_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(TokensError, match="cannot read"):
        Tokens.load(tmp_path / "absent")
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(TokensError, match="cannot read"):
        Tokens.load(path)


@pytest.mark.parametrize(
    ("field", "token"),
    [
        (f"Bearer {TOKEN_A}", TOKEN_A),
        (f"bearer   {TOKEN_A} ", TOKEN_A),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Basic {TOKEN_A}", None),
        (f"Bearer {TOKEN_A} x", None),
        ("Bearer tøken", None),
    ],
)
def test_bearer_token(field: str | None, token: str | None) -> None:
    assert bearer_token(field) == token
