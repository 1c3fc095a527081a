"""SigV4 signing against AWS's published examples (the SigV4 test suite and the S3 documentation)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fpgaserve.api.sigv4 import EMPTY_SHA256, Credentials, canonical_query, sign

# aws-sig-v4-test-suite: service "service", 2015-08-30T12:36:00Z.
SUITE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)
# "Signature Calculations for the Authorization Header" examples of the S3 documentation.
S3 = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
S3_TIME = datetime(2013, 5, 24, tzinfo=timezone.utc)
S3_HOST = "examplebucket.s3.amazonaws.com"


@pytest.mark.parametrize(
    ("name", "method", "path", "query", "signature"),
    [
        ("get-vanilla", "GET", "/", [], "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            [("Param2", "value2"), ("Param1", "value1")],
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        ("get-utf8", "GET", "/ሴ", [], "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        ("post-vanilla", "POST", "/", [], "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ],
)
def test_sigv4_test_suite(
    name: str, method: str, path: str, query: list[tuple[str, str]], signature: str
) -> None:
    signed = sign(
        method=method, host="example.amazonaws.com", path=path, query=query, credentials=SUITE,
        region="us-east-1", service="service", now=SUITE_TIME,
    )  # fmt: skip
    assert signed.signature == signature, name
    assert signed.headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )
    assert signed.headers["x-amz-date"] == "20150830T123600Z"


def test_s3_get_object_example() -> None:
    signed = sign(
        method="GET", host=S3_HOST, path="/test.txt", region="us-east-1", credentials=S3, now=S3_TIME,
        headers={"Range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256},
    )  # fmt: skip
    assert signed.headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_s3_put_object_example_encodes_the_path_once() -> None:
    payload = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    signed = sign(
        method="PUT", host=S3_HOST, path="/test$file.text", payload_sha256=payload, credentials=S3,
        region="us-east-1", now=S3_TIME,
        headers={
            "Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-content-sha256": payload,
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
        },
    )  # fmt: skip
    assert signed.canonical_request.splitlines()[1] == "/test%24file.text"
    assert signed.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ([("lifecycle", "")], "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            [("max-keys", "2"), ("prefix", "J")],
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_s3_query_examples(query: list[tuple[str, str]], signature: str) -> None:
    signed = sign(
        method="GET", host=S3_HOST, path="/", query=query, region="us-east-1", credentials=S3, now=S3_TIME,
        headers={"x-amz-content-sha256": EMPTY_SHA256},
    )  # fmt: skip
    assert signed.signature == signature


def test_session_token_is_signed_and_sent() -> None:
    token = Credentials("AKID", "secret", session_token="token/with+chars")
    signed = sign(method="GET", host="h", path="/k", credentials=token, region="eu-west-1", now=S3_TIME)
    assert signed.headers["x-amz-security-token"] == "token/with+chars"
    assert "x-amz-security-token" in signed.headers["authorization"]


def test_canonical_query_encodes_reserved_characters() -> None:
    assert canonical_query([("b", "x y"), ("a", "1/2"), ("a", "0")]) == "a=0&a=1%2F2&b=x%20y"


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Credentials("AKID", "very-secret", session_token="also-secret"))
    assert "AKID" in text and "secret" not in text
