"""ingress/openapi.py: a valid OpenAPI 3.1 document that agrees with the API's code."""

from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from ingress import api
from ingress.api_messages import MAX_BATCH, Limits, Rejected, parse_submission
from ingress.openapi import document
from shared.settings import load_settings

SETTINGS = load_settings({"MXFLEET_HOSTNAME": "mx.test"})
DOC = document(SETTINGS)


def validator(name: str) -> OAS31Validator:
    """A validator for one of the document's schemas (JSON Schema 2020-12, OpenAPI 3.1)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    return OAS31Validator(schema)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    errors = list(OpenAPIV31SpecValidator(DOC).iter_errors())
    assert errors == []
    OAS31Validator.check_schema({"$defs": DOC["components"]["schemas"]})


def test_it_describes_every_endpoint_and_the_bearer_scheme() -> None:
    assert set(DOC["paths"]) == set(api.ENDPOINTS)
    assert DOC["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert DOC["security"] == [{"bearer": []}]
    assert DOC["paths"]["/openapi.json"]["get"]["security"] == []
    single = DOC["paths"]["/v1/messages"]["post"]["responses"]
    assert {"201", "400", "401", "413", "415", "422", "503"} <= set(single)
    assert "Retry-After" in single["503"]["headers"]


def test_its_limits_are_the_settings() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["FieldsMessage"]["properties"]["to"]["maxItems"] == SETTINGS.max_recipients
    assert schemas["Batch"]["properties"]["messages"]["maxItems"] == MAX_BATCH
    small = document(
        load_settings({"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_MAX_RECIPIENTS": "100"})
    )
    assert (
        small["components"]["schemas"]["RawMessage"]["properties"]["envelope"]["properties"]["to"][
            "maxItems"
        ]
        == 100
    )


ACCEPTED: list[dict[str, Any]] = [
    {"from": "a@example.test", "to": ["b@dest.test"], "text": "x"},
    {"from": "a@example.test", "to": ["b@dest.test"], "html": "<p>x</p>", "subject": "s",
     "headers": {"X-A": "1"}, "priority": "bulk"},
    {"envelope": {"from": "", "to": ["b@dest.test"]}, "raw": "U3ViamVjdDogeA0KDQp4DQo=",
     "priority": "transactional"},
]  # fmt: skip
REFUSED: list[dict[str, Any]] = [
    {"from": "a@example.test", "to": ["b@dest.test"]},  # neither text nor html
    {"from": "a@example.test", "to": [], "text": "x"},
    {"from": "a@example.test", "to": ["b@dest.test"], "text": "x", "cc": ["c@dest.test"]},
    {"from": "a@example.test", "to": ["b@dest.test"], "text": "x", "priority": "high"},
    {"envelope": {"from": "", "to": ["b@dest.test"]}},
    {"envelope": {"from": "", "to": ["b@dest.test"]}, "raw": "eA==", "text": "x"},
]


@pytest.mark.parametrize("item", ACCEPTED)
def test_what_the_server_takes_the_schema_takes(item: dict[str, Any]) -> None:
    parse_submission(item, Limits.of(SETTINGS))
    assert list(validator("Message").iter_errors(item)) == []
    assert list(validator("Batch").iter_errors({"messages": [item, item]})) == []


@pytest.mark.parametrize("item", REFUSED)
def test_what_the_schema_refuses_the_server_refuses(item: dict[str, Any]) -> None:
    assert list(validator("Message").iter_errors(item)) != []
    with pytest.raises(Rejected):
        parse_submission(item, Limits.of(SETTINGS))
