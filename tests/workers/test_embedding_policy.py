"""Embeddings asked for shorter vectors or given token ids: pure units of the policy."""

from __future__ import annotations

import math

import pytest

from workers.api.embedding_policy import EmbeddingPolicy
from workers.errors import ApiError

VECTORS = [[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]]


def test_a_matryoshka_model_is_shortened_and_renormalised() -> None:
    shortened = EmbeddingPolicy(matryoshka=True).fit(VECTORS, 2)
    assert shortened == [[0.6, 0.8], [1.0, 0.0]]
    assert all(math.isclose(math.hypot(*v), 1.0) for v in shortened)


@pytest.mark.parametrize("policy", [EmbeddingPolicy(), EmbeddingPolicy(matryoshka=True)])
def test_no_dimensions_or_the_model_s_own_size_changes_nothing(policy: EmbeddingPolicy) -> None:
    assert policy.fit(VECTORS, None) is VECTORS and policy.fit(VECTORS, 3) is VECTORS


def test_another_model_is_never_cut_to_another_size() -> None:
    with pytest.raises(ApiError) as refused:
        EmbeddingPolicy().fit(VECTORS, 2)
    assert refused.value.status == 400 and refused.value.param == "dimensions"
    assert "have 3 dimensions and cannot be shortened" in refused.value.message


def test_more_dimensions_than_the_model_has_is_400() -> None:
    with pytest.raises(ApiError, match="'dimensions' is 4, but this model's embeddings have 3"):
        EmbeddingPolicy(matryoshka=True).fit(VECTORS, 4)


def test_token_ids_are_refused_naming_langchain_s_setting_unless_accepted() -> None:
    with pytest.raises(ApiError) as refused:
        EmbeddingPolicy().check_input([[15339, 1917]])
    assert refused.value.param == "input"
    assert "check_embedding_ctx_length=False" in refused.value.message
    EmbeddingPolicy().check_input(["hello world"])
    EmbeddingPolicy(accept_token_ids=True).check_input([[15339, 1917]])
