"""The checker lists issue 14's actor-only domains as such: an entity the actors alone hold is
expected (rule `actor-only`), never missing in Redis, and a credential is shown without its
value, not even its ciphertext."""

from __future__ import annotations

from consistency.compare import Kind, classify
from consistency.rules import Expectations
from consistency.stores import ACTOR_ONLY_DOMAINS
from gateway.domain.entities import EntityKey
from gateway.domain.progress_records import HIDDEN, CredentialRecord, ProgressRecord


def test_the_actor_only_domains_are_known_to_the_checker() -> None:
    assert {"soul", "trace", "heartbeat", "shadow", "goal", "credential"} <= ACTOR_ONLY_DOMAINS


def test_an_actor_only_entity_is_expected_and_a_credential_is_hidden() -> None:
    exp = Expectations(0, actor_only=ACTOR_ONLY_DOMAINS)
    soul = ProgressRecord({"soul_progression": [{"soul_id": "a", "total_xp": 5}]})
    found = classify(EntityKey("soul", "a", ""), None, soul, exp)
    assert found.kind is Kind.EXPECTED
    cred = CredentialRecord(
        {"credentials": [{"key": "K", "value": "v1:CIPHERTEXT", "masked_preview": "****"}]}
    )
    found = classify(EntityKey("credential", "a", "K"), None, cred, exp)
    assert found.kind is Kind.EXPECTED
    assert "CIPHERTEXT" not in repr(found)
    assert HIDDEN in repr(found)
