"""The HTTP API's OpenAPI 3.1 document, served at ``GET /openapi.json`` (hand-written).

The limits in it (recipients, message size, batch length) are the node's settings, so
the document says what this node accepts. ``tests/unit/test_openapi.py`` validates it
and checks that it names every route of :mod:`ingress.api`.
"""

from typing import Any

from ingress.api_messages import MAX_BATCH, MAX_HEADERS
from shared.priority import CLASSES
from shared.settings import Settings

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _error(description: str, *, retry: bool = False) -> Schema:
    response: Schema = {"description": description, "content": _json(_ref("Error"))}
    if retry:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


def _schemas(s: Settings) -> Schema:
    address: Schema = {"type": "string", "maxLength": 256, "examples": ["user@example.com"]}
    recipients: Schema = {"type": "array", "items": address, "minItems": 1}
    recipients["maxItems"] = s.max_recipients
    priority: Schema = {"type": "string", "enum": list(CLASSES)}
    fields: Schema = {
        "type": "object",
        "description": "A message built by the server (Date and Message-ID added if absent).",
        "required": ["from", "to"],
        "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
        "additionalProperties": False,
        "properties": {
            "from": {**address, "description": "Envelope sender and From: field."},
            "to": {**recipients, "description": "Envelope recipients and To: field."},
            "subject": {"type": "string"},
            "text": {"type": "string", "description": "text/plain part"},
            "html": {"type": "string", "description": "text/html part"},
            "headers": {
                "type": "object",
                "maxProperties": MAX_HEADERS,
                "additionalProperties": {"type": "string", "maxLength": 998},
                "description": "Extra fields; not From, To, Cc, Bcc, Subject, MIME, trace.",
            },
            "priority": priority,
        },
    }
    raw: Schema = {
        "type": "object",
        "description": "A message made by the client, with its envelope.",
        "required": ["envelope", "raw"],
        "additionalProperties": False,
        "properties": {
            "envelope": {
                "type": "object",
                "required": ["from", "to"],
                "additionalProperties": False,
                "properties": {
                    "from": {**address, "description": '"" for the null sender <>'},
                    "to": recipients,
                },
            },
            "raw": {
                "type": "string",
                "contentEncoding": "base64",
                "contentMediaType": "message/rfc822",
                "description": f"The RFC 5322 message, at most {s.max_message_size} bytes.",
            },
            "priority": priority,
        },
    }
    error: Schema = {
        "type": "object",
        "required": ["message"],
        "properties": {
            "status": {"type": "integer", "description": "HTTP status (batch results)"},
            "message": {"type": "string"},
            "field": {"type": "string", "examples": ["to[2]", "headers.Date", "raw"]},
            "smtp": {
                "type": "object",
                "description": "The SMTP reply an SMTP client would have got.",
                "required": ["code", "status", "text"],
                "properties": {
                    "code": {"type": "integer", "examples": [451]},
                    "status": {"type": "string", "examples": ["4.3.0"]},
                    "text": {"type": "string"},
                },
            },
        },
    }
    return {
        "Message": {"oneOf": [_ref("FieldsMessage"), _ref("RawMessage")]},
        "FieldsMessage": fields,
        "RawMessage": raw,
        "Accepted": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string", "description": "The queue id."}},
        },
        "ErrorDetail": error,
        "Error": {"type": "object", "required": ["error"], "properties": {"error": error}},
        "Batch": {
            "type": "object",
            "required": ["messages"],
            "additionalProperties": False,
            "properties": {
                "messages": {
                    "type": "array",
                    "items": _ref("Message"),
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                }
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["accepted", "failed", "results"],
            "properties": {
                "accepted": {"type": "integer"},
                "failed": {"type": "integer"},
                "results": {
                    "type": "array",
                    "description": "One per message, in order.",
                    "items": {
                        "oneOf": [
                            _ref("Accepted"),
                            {
                                "type": "object",
                                "required": ["error"],
                                "properties": {"error": _ref("ErrorDetail")},
                            },
                        ]
                    },
                },
            },
        },
    }


def _common_errors() -> Schema:
    return {
        "400": _error("Not valid: error.field names the part at fault."),
        "401": {
            "description": "No bearer token, or an unknown one.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": _json(_ref("Error")),
        },
        "413": _error("The body, the batch or a message is too large."),
        "415": _error("The body is not application/json."),
        "503": _error("The spool cannot take mail now (SMTP 4xx): retry later.", retry=True),
    }


def _paths() -> Schema:
    single = {
        "summary": "Queue one message",
        "operationId": "sendMessage",
        "requestBody": {"required": True, "content": _json(_ref("Message"))},
        "responses": {
            "201": {"description": "Stored durably.", "content": _json(_ref("Accepted"))},
            **_common_errors(),
            "422": _error("Refused as SMTP would refuse it (error.smtp: the reply)."),
        },
    }
    batch = {
        "summary": f"Queue up to {MAX_BATCH} messages",
        "operationId": "sendBatch",
        "requestBody": {"required": True, "content": _json(_ref("Batch"))},
        "responses": {
            "200": {
                "description": "A result per message, in order.",
                "content": _json(_ref("BatchResult")),
            },
            **_common_errors(),
            "503": {
                "description": "The spool took none of the messages: send them again later.",
                "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                "content": _json(_ref("BatchResult")),
            },
        },
    }
    spec = {
        "summary": "This document",
        "operationId": "openapi",
        "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({})}},
    }
    return {
        "/v1/messages": {"post": single},
        "/v1/messages/batch": {"post": batch},
        "/openapi.json": {"get": spec},
    }


def document(settings: Settings) -> Schema:
    """The OpenAPI document of this node's API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mxfleet injection API",
            "version": "1",
            "description": "Queue mail for relay: each accepted message is durable, "
            "like one answered 250 over SMTP.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                }
            },
            "schemas": _schemas(settings),
        },
    }
