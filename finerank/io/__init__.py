"""Files: the data formats (pairs, BEIR, TREC, runs), the output policy, and resolving and loading models."""
