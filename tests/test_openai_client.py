"""The official ``openai`` Python client against a real `vecdoctor serve` on loopback: the
embeddings endpoint answers to the model name the client sends once it is configured."""

from __future__ import annotations

import numpy as np
import pytest
from test_monitor import index_dir, served, split_sample  # noqa: F401


def test_the_openai_client_gets_the_index_embeddings_under_its_own_model_name(index_dir):
    openai = pytest.importorskip("openai")
    from vecdoctor.index.store import Index

    key = "client-key"
    texts = ["how are generator expressions evaluated", "the import statement"]
    want = Index.load(index_dir).embed_queries(texts)
    with served(index_dir, key, "--model-name", "text-embedding-3-small") as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        got = client.embeddings.create(model="text-embedding-3-small", input=texts)
        assert [d.index for d in got.data] == [0, 1] and got.usage.total_tokens > 0
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-5)
        # base64 is what the client asks for when numpy is around: the same vectors
        assert len(got.data[0].embedding) == want.shape[1]
        with pytest.raises(openai.NotFoundError, match="--model-name other-model"):
            client.embeddings.create(model="other-model", input=texts)
