#!/usr/bin/env python3
"""Checks docs/openapi.yaml and docs/openapi-issuer.yaml: valid OpenAPI 3.1 descriptions, and every
example payload of the documents (crates/cardsync-proto/tests/data/) valid against the schema it
describes."""
import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/cardsync-proto/tests/data"

# (schema, example file) for every example that is a whole request, response or webhook.
EXAMPLES = [
    ("GenericResponse", "universal/generic_response.json"),
    ("GenericResponse", "amex/generic_response.json"),
    ("Merchant", "universal/merchant_enroll_request.json"),
    ("Merchant", "universal/merchant_schema_request.json"),
    ("EnrollMerchantResponse", "universal/merchant_enroll_response.json"),
    ("CardBatch", "universal/batch_create_request.json"),
    ("SubscriptionBatch", "universal/subscribe_request.json"),
    ("SubscriptionBatch", "amex/subscribe_request.json"),
    ("BatchResponse", "universal/batch_create_response.json"),
    ("BatchResponse", "universal/batch_status_response.json"),
    ("BatchResponse", "universal/batch_status_schema_response.json"),
    ("ResultsResponse", "universal/batch_results_response.json"),
    ("ResultsResponse", "universal/subscription_results_response.json"),
    ("ResultsResponse", "universal/results_schema_response.json"),
    ("ResultsResponse", "universal/batch_results_data_schema_response.json"),
    ("ResultsResponse", "amex/subscription_results_response.json"),
    ("ResultsResponse", "amex/subscription_results_schema_response.json"),
    ("ResultsResponse", "amex/data_schema_response.json"),
    ("WebhooksFlat", "universal/webhooks_flat_request.json"),
    ("WebhookRegistration", "amex/webhook_request.json"),
    ("BatchCompletionWebhook", "universal/webhook_batch_available.json"),
    ("EnrollMerchantWebhook", "universal/webhook_enrollment_complete.json"),
    ("BatchErrorWebhook", "universal/webhook_batch_error.json"),
    ("AmexUpdateWebhook", "universal/webhook_amex_update.json"),
    ("AmexUpdateWebhook", "amex/webhook_amex_update.json"),
    ("Stats", "universal/stats_schema.json"),
    ("Stats", "amex/stats_schema.json"),
]

# The issuer side (docs/openapi-issuer.yaml).
ISSUER_EXAMPLES = [
    ("UpdateCardsRequest", "issuer/update_cards_request.json"),
    ("FeedResponse", "issuer/update_cards_response.json"),
    ("CardEdits", "issuer/update_card_request.json"),
    ("IssuedCard", "issuer/update_card_response.json"),
]


def check(name: str, examples: list) -> int:
    spec = yaml.safe_load((ROOT / "docs" / name).read_text())
    validate(spec)
    resource = Resource.from_contents(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": spec["components"]}
    )
    registry = Registry().with_resource("urn:spec", resource)
    failures = 0
    for schema, path in examples:
        validator = Draft202012Validator({"$ref": f"urn:spec#/components/schemas/{schema}"}, registry=registry)
        errors = list(validator.iter_errors(json.loads((DATA / path).read_text())))
        for e in errors:
            print(f"{path} does not fit {schema}: {e.message}")
        failures += len(errors)
    print(f"docs/{name}: valid OpenAPI {spec['openapi']}; {len(examples)} document examples checked, {failures} problems")
    return failures


def main() -> int:
    failures = check("openapi.yaml", EXAMPLES) + check("openapi-issuer.yaml", ISSUER_EXAMPLES)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
