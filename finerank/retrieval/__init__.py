"""The first stage over a corpus: BM25 and dense (bi-encoder) retrieval, candidate and negative mining."""
